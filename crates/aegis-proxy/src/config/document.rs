//! Reads TOML text into [`RawConfig`] and reports every syntax and schema mistake in one run.
//!
//! serde stops at the first mistake. To find the others, this module works on toml's parsed
//! document tree, which keeps each value's span. It records the mistake, repairs the tree at
//! that spot, and deserializes again. To repair, it removes an unknown key; a value of the
//! wrong type (or a missing required key) gets a placeholder of a type the schema accepts,
//! found by trying each TOML type, and is removed only if none fits. The schema is still only
//! `raw.rs`: no second description of the file exists. The keys it repaired are returned, so
//! that semantic checks on placeholders are not reported.
//!
//! Messages are rewritten to teach: a near-miss key or variant gets "did you mean", and a
//! duration given as text (`"5s"`) gets the integer to write.

use std::ops::Range;

use serde_path_to_error::Segment;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::raw::RawConfig;
use super::{ConfigError, ConfigErrors};

/// At most this many schema mistakes are reported; past it the file is not worth reading on.
const MAX_MISTAKES: usize = 100;

/// The file as read, with the schema mistakes found on the way.
pub(super) struct Document {
    /// The typed file, repaired where it had mistakes.
    pub(super) raw: RawConfig,
    /// Schema mistakes, in the order found.
    pub(super) errors: Vec<ConfigError>,
    /// What was removed or given a placeholder.
    pub(super) repaired: Repaired,
}

/// Key paths that were removed or given a placeholder.
#[derive(Debug, Default)]
pub(super) struct Repaired(Vec<String>);

impl Repaired {
    /// Whether a semantic error at `key` is about a repaired value, and so not worth reporting.
    pub(super) fn covers(&self, key: &str) -> bool {
        self.0.iter().any(|r| {
            key.strip_prefix(r.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }
}

/// Parses `text` and deserializes it, collecting every mistake. `Err` when the text is not
/// TOML or a mistake could not be repaired.
pub(super) fn read(text: &str) -> Result<Document, ConfigErrors> {
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let errors = syntax.iter().map(|e| syntax_error(text, e)).collect();
        return Err(ConfigErrors(errors));
    }
    let mut errors = Vec::new();
    let mut repaired = Repaired::default();
    while errors.len() < MAX_MISTAKES {
        let failure = match deserialize(&root) {
            Ok(raw) => {
                return Ok(Document {
                    raw,
                    errors,
                    repaired,
                })
            }
            Err(failure) => failure,
        };
        errors.push(failure.to_error(text));
        let Some(spot) = Spot::of(root.get_ref(), &failure) else {
            break;
        };
        if !repair(&mut root, &spot, &failure) {
            break;
        }
        repaired.0.push(spot.key());
    }
    Err(ConfigErrors(errors))
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError {
        key: String::new(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_owned(),
    }
}

/// One step from a table or array into its child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where serde stopped, and why.
#[derive(Debug)]
struct Failure {
    path: Vec<Step>,
    span: Option<Range<usize>>,
    message: String,
}

fn deserialize(root: &Spanned<DeTable<'_>>) -> Result<RawConfig, Failure> {
    let deserializer = toml::de::Deserializer::from(root.clone());
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                // `Spanned` wraps values in a private struct that shows up as a path segment.
                Segment::Map { key } if key.starts_with("$__serde_spanned_private") => None,
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        Failure {
            path,
            span: e.inner().span(),
            message: e.inner().message().trim_end().to_owned(),
        }
    })
}

impl Failure {
    /// The field a "missing field `x`" message names.
    fn missing_field(&self) -> Option<&str> {
        backticked(self.message.strip_prefix("missing field ")?)
    }

    fn to_error(&self, text: &str) -> ConfigError {
        let key = dotted(&self.path);
        ConfigError {
            line: self.span.as_ref().map(|s| line_of(text, s.start)),
            message: teach(&key, &self.message),
            key,
        }
    }
}

/// The first `` `...` `` in `text`.
fn backticked(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// `clusters.api.endpoints[1]`, as the semantic checks write key paths.
fn dotted(path: &[Step]) -> String {
    let mut key = String::new();
    for step in path {
        match step {
            Step::Key(k) if key.is_empty() => key.push_str(k),
            Step::Key(k) => {
                key.push('.');
                key.push_str(k);
            }
            Step::Index(i) => key.push_str(&format!("[{i}]")),
        }
    }
    key
}

/// The value a mistake is about: a child of the table or array at `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spot {
    parent: Vec<Step>,
    child: Step,
}

impl Spot {
    /// The missing field, the key or element whose span holds the failure, or the failure's
    /// own path, in that order.
    fn of(root: &DeTable<'_>, failure: &Failure) -> Option<Self> {
        if let Some(field) = failure.missing_field() {
            let child = Step::Key(field.to_owned());
            return Some(Self {
                parent: failure.path.clone(),
                child,
            });
        }
        if let Some(span) = &failure.span {
            let mut path = Vec::new();
            innermost_in_table(root, span.start, &mut path);
            if let Some(child) = path.pop() {
                return Some(Self {
                    parent: path,
                    child,
                });
            }
        }
        let mut parent = failure.path.clone();
        let child = parent.pop()?;
        Some(Self { parent, child })
    }

    fn key(&self) -> String {
        let mut path = self.parent.clone();
        path.push(self.child.clone());
        dotted(&path)
    }

    /// Whether `failure` is still about this spot.
    fn concerns(&self, root: &DeTable<'_>, failure: &Failure) -> bool {
        Self::of(root, failure).as_ref() == Some(self)
    }
}

/// Extends `path` to the deepest entry whose key or value span holds `offset`.
fn innermost_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Step>) {
    for (key, value) in table.iter() {
        if key.span().contains(&offset) {
            path.push(Step::Key(key.get_ref().to_string()));
            return;
        }
        if value.span().contains(&offset) {
            path.push(Step::Key(key.get_ref().to_string()));
            innermost_in_value(value.get_ref(), offset, path);
            return;
        }
    }
    // Tables from `[a.b]` headers have spans that do not cover their entries: look inside.
    for (key, value) in table.iter() {
        let depth = path.len();
        path.push(Step::Key(key.get_ref().to_string()));
        innermost_in_value(value.get_ref(), offset, path);
        if path.len() > depth + 1 {
            return;
        }
        path.truncate(depth);
    }
}

fn innermost_in_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<Step>) {
    match value {
        DeValue::Table(table) => innermost_in_table(table, offset, path),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let depth = path.len();
                path.push(Step::Index(i));
                if item.span().contains(&offset) {
                    innermost_in_value(item.get_ref(), offset, path);
                    return;
                }
                innermost_in_value(item.get_ref(), offset, path);
                if path.len() > depth + 1 {
                    return;
                }
                path.truncate(depth);
            }
        }
        _ => {}
    }
}

/// A change that may make the spot acceptable to the schema.
#[derive(Debug, Clone, Copy)]
enum Fix {
    Remove,
    Placeholder(fn() -> DeValue<'static>),
}

const PLACEHOLDERS: [Fix; 6] = [
    Fix::Placeholder(|| DeValue::String("".into())),
    Fix::Placeholder(|| DeValue::Integer(Default::default())),
    Fix::Placeholder(|| DeValue::Float(Default::default())),
    Fix::Placeholder(|| DeValue::Boolean(false)),
    Fix::Placeholder(|| DeValue::Array(DeArray::new())),
    Fix::Placeholder(|| DeValue::Table(DeTable::new())),
];

/// Applies the first fix after which serde no longer stops at `spot`. An unknown key is
/// removed; a value of the wrong type is replaced by one of the right type (so that checks
/// which follow do not miss it and report a consequence), and removed only if none fits.
fn repair(root: &mut Spanned<DeTable<'_>>, spot: &Spot, failure: &Failure) -> bool {
    let unknown_key = failure.message.starts_with("unknown field ");
    let removable = failure.missing_field().is_none();
    let fixes = unknown_key
        .then_some(Fix::Remove)
        .into_iter()
        .chain(PLACEHOLDERS)
        .chain((removable && !unknown_key).then_some(Fix::Remove));
    let span = failure.span.clone().unwrap_or(0..0);
    for fix in fixes {
        let mut candidate = root.clone();
        if !apply(candidate.get_mut(), spot, fix, &span) {
            continue;
        }
        let settled = match deserialize(&candidate) {
            Ok(_) => true,
            Err(next) => !spot.concerns(candidate.get_ref(), &next),
        };
        if settled {
            *root = candidate;
            return true;
        }
    }
    false
}

fn apply(root: &mut DeTable<'_>, spot: &Spot, fix: Fix, span: &Range<usize>) -> bool {
    let mut whole = DeValue::Table(std::mem::replace(root, DeTable::new()));
    let applied = descend(&mut whole, &spot.parent).is_some_and(|p| apply_at(p, spot, fix, span));
    if let DeValue::Table(table) = whole {
        *root = table;
    }
    applied
}

fn apply_at(parent: &mut DeValue<'_>, spot: &Spot, fix: Fix, span: &Range<usize>) -> bool {
    let placeholder = |make: fn() -> DeValue<'static>, at: Range<usize>| Spanned::new(at, make());
    match (parent, &spot.child, fix) {
        (DeValue::Table(table), Step::Key(key), Fix::Remove) => {
            table.remove(key.as_str()).is_some()
        }
        (DeValue::Table(table), Step::Key(key), Fix::Placeholder(make)) => {
            let at = table
                .get(key.as_str())
                .map_or_else(|| span.clone(), Spanned::span);
            let key = Spanned::new(at.clone(), key.clone().into());
            table.insert(key, placeholder(make, at));
            true
        }
        (DeValue::Array(array), Step::Index(i), Fix::Remove) => {
            let mut kept = DeArray::new();
            for (j, item) in array.iter().enumerate() {
                if j != *i {
                    kept.push(item.clone());
                }
            }
            *array = kept;
            true
        }
        (DeValue::Array(array), Step::Index(i), Fix::Placeholder(make)) => {
            match array.get_mut(*i) {
                Some(item) => {
                    *item = placeholder(make, item.span());
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}

/// The table or array at `path` below `value`.
fn descend<'v, 'i>(mut value: &'v mut DeValue<'i>, path: &[Step]) -> Option<&'v mut DeValue<'i>> {
    for step in path {
        value = match (value, step) {
            (DeValue::Table(t), Step::Key(k)) => t.get_mut(k.as_str())?.get_mut(),
            (DeValue::Array(a), Step::Index(i)) => a.get_mut(*i)?.get_mut(),
            _ => return None,
        };
    }
    Some(value)
}

/// Rewrites serde's message for `key` so it says how to fix the mistake.
fn teach(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown("key", rest).unwrap_or_else(|| message.to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return unknown("value", rest).unwrap_or_else(|| message.to_owned());
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing key {field}");
    }
    if let Some(mismatch) = message.strip_prefix("invalid type: ") {
        let (found, expected) = mismatch.split_once(", expected ").unwrap_or((mismatch, ""));
        return unit_hint(key, found)
            .unwrap_or_else(|| format!("expected {}, found {found}", toml_type(expected)));
    }
    message.to_owned()
}

/// serde's name for what it expected, in TOML's words.
fn toml_type(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a boolean" => "true or false",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

/// "unknown key `endpoint`; did you mean `endpoints`?" from serde's "`endpoint`, expected
/// one of `endpoints`, ...".
fn unknown(what: &str, rest: &str) -> Option<String> {
    let given = backticked(rest)?;
    let (_, expected) = rest.split_once("expected ")?;
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    Some(match closest(given, &known) {
        Some(near) => format!("unknown {what} `{given}`; did you mean `{near}`?"),
        None if known.is_empty() => format!("unknown {what} `{given}`; {expected}"),
        None => format!(
            "unknown {what} `{given}`; expected one of {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The known name nearest to `given`, if it is near enough to be a typo.
pub(super) fn closest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (given.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// For a `_ms` or `_bytes` key given the wrong type: what to write instead.
fn unit_hint(key: &str, given: &str) -> Option<String> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if leaf.ends_with("_ms") {
        let text = given.strip_prefix("string ").map(|s| s.trim_matches('"'));
        let example = text.and_then(millis).unwrap_or(5000);
        return Some(format!(
            "expected integer milliseconds, e.g. {example}; found {given}"
        ));
    }
    if leaf.ends_with("_bytes") {
        return Some(format!(
            "expected an integer number of bytes, e.g. 65536; found {given}"
        ));
    }
    None
}

/// `"5s"`, `"250ms"`, `"2m"`, `"1h"` in milliseconds.
fn millis(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let value: f64 = digits.trim().parse().ok()?;
    let scale = match &text[digits.len()..] {
        "ms" => 1.0,
        "s" => 1e3,
        "m" | "min" => 60e3,
        "h" => 3_600e3,
        _ => return None,
    };
    let ms = value * scale;
    (ms.is_finite() && ms >= 0.0 && ms <= u64::MAX as f64).then_some(ms as u64)
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
