//! The one path normaliser: every protocol routes and forwards the same normalised path.
//!
//! A route on `/admin/` must not be reachable as `//admin/x`, `/./admin/x`, `/x/../admin/x`,
//! `/%61dmin/x` or `\admin\x`. Before routing, the path (never the query) is put in the form
//! RFC 3986 §6.2.2 defines: percent-encoded unreserved characters decoded (§6.2.2.2), other
//! percent-encodings in upper case (§6.2.2.1), dot segments removed (§5.2.4, §6.2.2.3); then,
//! as Envoy and nginx do, `\` read as `/` and runs of `/` merged. Encoded slashes (`%2F`, and
//! `%5C`, which some origins read as a separator) are kept, rejected or decoded, as the
//! listener says. The normalised path is what the origin receives.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EncodedSlashes {
    /// Forward them as they are (upper-cased): they are data, not separators.
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Decode them to `/`, then normalise the result (Envoy's `UNESCAPE_AND_FORWARD`).
    Decode,
}

/// How a listener treats request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Answer 400 to a path that is not already normal, instead of forwarding it normalised.
    pub reject_unnormalized: bool,
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` mean.
    pub encoded_slashes: EncodedSlashes,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            reject_unnormalized: false,
            merge_slashes: true,
            encoded_slashes: EncodedSlashes::Keep,
        }
    }
}

/// Why a path cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// `%` not followed by two hex digits (RFC 3986 §2.1).
    BadPercent,
    /// `%2F` or `%5C` on a listener that rejects them.
    EncodedSlash,
    /// The path is not in normal form, on a listener that refuses such paths.
    NotNormal,
}

impl PathError {
    /// The text of the 400 response.
    pub fn message(self) -> &'static str {
        match self {
            Self::BadPercent => "invalid percent-encoding in path",
            Self::EncodedSlash => "encoded slash in path",
            Self::NotNormal => "path is not normalized",
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

/// The normalised form of `path` (borrowed when it already is normal), or why it is refused.
/// A path that does not start with `/` (`*`, or empty for CONNECT) is left as it is.
pub fn normalize(path: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes(), rules) {
        return Ok(Cow::Borrowed(path));
    }
    let normal = rewrite(path.as_bytes(), rules)?;
    if normal == path {
        return Ok(Cow::Borrowed(path));
    }
    if rules.reject_unnormalized {
        return Err(PathError::NotNormal);
    }
    Ok(Cow::Owned(normal))
}

/// The quick check for the common case: ASCII without `%` or `\`, no `//` (when merging) and
/// no `.` or `..` segment means the path is already normal.
fn is_normal(path: &[u8], rules: PathRules) -> bool {
    let mut previous = b'/';
    let mut segment_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | 0x80.. => return false,
            b'/' if i > 0 => {
                if (previous == b'/' && rules.merge_slashes)
                    || is_dot_segment(&path[segment_start..i])
                {
                    return false;
                }
                segment_start = i + 1;
            }
            b'/' => segment_start = 1,
            _ => {}
        }
        previous = b;
    }
    !is_dot_segment(&path[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// Decodes, splits into segments, drops dot segments and (optionally) empty ones, joins again.
fn rewrite(path: &[u8], rules: PathRules) -> Result<String, PathError> {
    let decoded = decode(path, rules.encoded_slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            "" if rules.merge_slashes && i != last => {}
            other => segments.push(other),
        }
        // `/a/.` and `/a/b/..` name a directory: they keep their trailing slash.
        if i == last && (*segment == "." || *segment == "..") {
            segments.push("");
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Percent-decodes unreserved characters, upper-cases the rest, reads `\` as `/`, and applies
/// the encoded-slash rule. The output is ASCII: every byte that is not a printable unreserved
/// or sub-delimiter character stays encoded.
fn decode(path: &[u8], slashes: EncodedSlashes) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        i += 1;
        if b == b'\\' {
            out.push('/');
            continue;
        }
        if !b.is_ascii() {
            push_encoded(&mut out, b); // RFC 3986 §2.1: octets outside ASCII are encoded
            continue;
        }
        if b != b'%' {
            out.push(char::from(b));
            continue;
        }
        let (Some(hi), Some(lo)) = (path.get(i).and_then(hex), path.get(i + 1).and_then(hex))
        else {
            return Err(PathError::BadPercent);
        };
        i += 2;
        let byte = hi << 4 | lo;
        match byte {
            b'/' | b'\\' => match slashes {
                EncodedSlashes::Keep => push_encoded(&mut out, byte),
                EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                EncodedSlashes::Decode => out.push('/'),
            },
            _ if is_unreserved(byte) => out.push(char::from(byte)),
            _ => push_encoded(&mut out, byte),
        }
    }
    Ok(out)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: &u8) -> Option<u8> {
    char::from(*b).to_digit(16).map(|d| d as u8)
}

fn push_encoded(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 15)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path, PathRules::default()).map(Cow::into_owned)
    }

    fn with(path: &str, rules: PathRules) -> Result<String, PathError> {
        normalize(path, rules).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/x?y", "*", ""] {
            assert!(
                matches!(normalize(path, PathRules::default()), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4
    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/./admin/x").unwrap(), "/admin/x");
        assert_eq!(norm("/x/../admin/x").unwrap(), "/admin/x");
        assert_eq!(norm("/../../admin").unwrap(), "/admin");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("/a/b/../../..").unwrap(), "/");
    }

    //= https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2.2
    #[test]
    fn unreserved_characters_are_decoded_and_the_rest_upper_cased() {
        assert_eq!(norm("/%61dmin/x").unwrap(), "/admin/x");
        assert_eq!(norm("/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/x/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(norm("/%7e%41").unwrap(), "/~A");
    }

    #[test]
    fn slashes_and_backslashes_are_merged() {
        assert_eq!(norm("//admin/x").unwrap(), "/admin/x");
        assert_eq!(norm("/a///b//").unwrap(), "/a/b/");
        assert_eq!(norm("/\\admin\\x").unwrap(), "/admin/x");
        let keep = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(with("//a//b", keep).unwrap(), "//a//b");
        assert_eq!(with("//a/./b", keep).unwrap(), "//a/b");
    }

    #[test]
    fn encoded_slashes_follow_the_rule() {
        assert_eq!(norm("/a%2fb/%5c").unwrap(), "/a%2Fb/%5C");
        let rule = |encoded_slashes| PathRules {
            encoded_slashes,
            ..PathRules::default()
        };
        assert_eq!(
            with("/a%2Fb", rule(EncodedSlashes::Reject)),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            with("/x%2F..%2Fadmin", rule(EncodedSlashes::Decode)).unwrap(),
            "/admin"
        );
        assert_eq!(
            with("/x%5C..%5Cadmin", rule(EncodedSlashes::Decode)).unwrap(),
            "/admin"
        );
    }

    #[test]
    fn bad_percent_encodings_are_refused() {
        for path in ["/%", "/%4", "/%zz", "/a%g1"] {
            assert_eq!(norm(path), Err(PathError::BadPercent), "{path}");
        }
    }

    #[test]
    fn reject_mode_refuses_what_rewrite_mode_would_change() {
        let strict = PathRules {
            reject_unnormalized: true,
            ..PathRules::default()
        };
        assert_eq!(with("//admin", strict), Err(PathError::NotNormal));
        assert_eq!(with("/%61", strict), Err(PathError::NotNormal));
        assert_eq!(with("/a/b", strict).unwrap(), "/a/b");
        // Already normal, though it has a percent-encoding: nothing to refuse.
        assert_eq!(with("/a%20b", strict).unwrap(), "/a%20b");
    }

    /// Found by the `request_target` fuzzer: a path that is normal but for a raw non-ASCII
    /// byte (no client library sends one, but the normaliser must not depend on that).
    #[test]
    fn raw_non_ascii_is_percent_encoded() {
        let keep = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(with("///\u{645}/", keep).unwrap(), "///%D9%85/");
        assert_eq!(norm("/caf\u{e9}").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for path in [
            "/a/./b/../c//d",
            "/%2e%2E/%41%2f",
            "/\\x\\..\\y",
            "/a/..%2F",
        ] {
            let once = norm(path).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{path}");
        }
    }
}
