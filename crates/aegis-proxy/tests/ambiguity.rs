//! Ambiguity is resolved before routing, the same way on every protocol: one normalised path,
//! one validated authority, forwarding headers only from trusted hops.

mod support;

use aegis_proxy::demo::spawn_origin;
use support::*;

/// `/admin/` goes to the `admin` origin, `api.example.com` to `api`, the rest to `public`.
async fn proxy(dir: &TestDir, extra_listener: &str) -> aegis_proxy::Running {
    let admin = spawn_origin("admin").await.unwrap();
    let api = spawn_origin("api").await.unwrap();
    let public = spawn_origin("public").await.unwrap();
    let rest = format!(
        r#"
[[routes]]
path_prefix = "/admin/"
cluster = "admin"

[[routes]]
host = "api.example.com"
cluster = "api"

[[routes]]
cluster = "public"

[clusters.admin]
endpoints = ["{admin}"]

[clusters.api]
endpoints = ["{api}"]

[clusters.public]
endpoints = ["{public}"]
"#
    );
    start(&matrix_config(extra_listener, &rest), dir).await
}

fn seen(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
}

/// Paths that name `/admin/x` once dot segments, encodings and slashes are resolved.
const BYPASSES: [&str; 8] = [
    "//admin/x",
    "/./admin/x",
    "/x/../admin/x",
    "/%61dmin/x",
    "/%2e%2e/admin/x",
    "/x/%2E%2e/admin//x",
    "/\\admin\\x",
    "/admin/./y/../x",
];

//= https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2
#[tokio::test]
async fn path_prefix_routes_cannot_be_bypassed_on_any_protocol() {
    let dir = TestDir::new("bypass");
    let proxy = proxy(&dir, "").await;
    for proto in PROTOCOLS {
        for path in BYPASSES {
            let answer = proto.send(&proxy, &dir, &Sent::get(path)).await.unwrap();
            assert_eq!(answer.status, 200, "{proto:?} {path}: {answer:?}");
            let seen = seen(&answer);
            assert_eq!(seen["origin"], "admin", "{proto:?} {path}");
            assert_eq!(seen["path"], "/admin/x", "{proto:?} {path}");
        }
    }
}

#[tokio::test]
async fn a_strict_listener_refuses_paths_that_are_not_normal() {
    let dir = TestDir::new("strictpath");
    let proxy = proxy(&dir, "path_normalization = \"reject\"").await;
    for proto in PROTOCOLS {
        for path in BYPASSES {
            let answer = proto.send(&proxy, &dir, &Sent::get(path)).await.unwrap();
            assert_eq!(answer.status, 400, "{proto:?} {path}: {answer:?}");
            assert_eq!(answer.body, "bad request: path is not normalized\n");
        }
        let normal = proto.send(&proxy, &dir, &Sent::get("/admin/x")).await;
        assert_eq!(normal.unwrap().status, 200, "{proto:?}");
    }
}

#[tokio::test]
async fn encoded_slashes_are_kept_rejected_or_decoded_as_configured() {
    let dir = TestDir::new("slashes");
    let cases = [
        ("", Some(("public", "/admin%2Fx"))),
        ("encoded_slashes = \"reject\"", None),
        ("encoded_slashes = \"decode\"", Some(("admin", "/admin/x"))),
    ];
    for (setting, expected) in cases {
        let proxy = proxy(&dir, setting).await;
        for proto in PROTOCOLS {
            let answer = proto.send(&proxy, &dir, &Sent::get("/admin%2fx")).await;
            let answer = answer.unwrap();
            match expected {
                Some((origin, path)) => {
                    assert_eq!(answer.status, 200, "{setting} {proto:?}: {answer:?}");
                    assert_eq!(seen(&answer)["origin"], origin, "{setting} {proto:?}");
                    assert_eq!(seen(&answer)["path"], path, "{setting} {proto:?}");
                }
                None => {
                    assert_eq!(answer.status, 400, "{setting} {proto:?}");
                    assert_eq!(answer.body, "bad request: encoded slash in path\n");
                }
            }
        }
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_trailing_dot_routes_like_the_name_without_it() {
    let dir = TestDir::new("trailingdot");
    let proxy = proxy(&dir, "").await;
    for proto in PROTOCOLS {
        for authority in ["api.example.com.", "API.example.com.:8443"] {
            let sent = Sent::get("/v1").authority(authority);
            let answer = proto.send(&proxy, &dir, &sent).await.unwrap();
            assert_eq!(seen(&answer)["origin"], "api", "{proto:?} {authority}");
        }
    }
}

/// Host values that two parsers could read as different hosts.
//= https://www.rfc-editor.org/rfc/rfc9110#section-7.2
#[tokio::test]
async fn invalid_host_values_are_400_on_both_http1_paths() {
    let dir = TestDir::new("badhost");
    let proxy = proxy(&dir, "").await;
    for proto in [Proto::H1Fast, Proto::H1General] {
        for host in ["a:b:c", "[", "::1", "host:99999", "user@host", "[::1]x"] {
            let answer = proto
                .send(&proxy, &dir, &Sent::get("/").authority(host))
                .await;
            let answer = answer.unwrap();
            assert_eq!(answer.status, 400, "{proto:?} {host}: {answer:?}");
        }
    }
}

/// HTTP/2 and HTTP/3 carry the authority in `:authority`; userinfo there is malformed, and so
/// is a `host` header that names another host. (For HTTP/3 the patched h3 resets both with
/// H3_MESSAGE_ERROR, `tests/h3_malformed.rs`, and its client will not send a second host.)
//= https://www.rfc-editor.org/rfc/rfc9113#section-8.3.1
//= https://www.rfc-editor.org/rfc/rfc9114#section-4.3.1
#[tokio::test]
async fn one_authority_per_request_over_h2_and_h3() {
    let dir = TestDir::new("authority");
    let proxy = proxy(&dir, "").await;
    let userinfo = Sent::get("/").authority("user@api.example.com");
    for proto in [Proto::H2c, Proto::H2] {
        let answer = proto.send(&proxy, &dir, &userinfo).await.unwrap();
        assert_eq!(answer.status, 400, "{proto:?} userinfo: {answer:?}");
        assert_eq!(answer.body, "bad request: invalid character in host\n");
    }
    let answer = Proto::H3.send(&proxy, &dir, &userinfo).await;
    assert!(answer.is_err(), "H3 userinfo: {answer:?}");
    for proto in [Proto::H2c, Proto::H2] {
        let two = Sent::get("/v1").header("host", "api.example.com");
        let answer = proto.send(&proxy, &dir, &two).await.unwrap();
        assert_eq!(answer.status, 400, "{proto:?} two authorities: {answer:?}");
        assert_eq!(
            answer.body,
            "bad request: host header differs from :authority\n"
        );

        let same = Sent::get("/v1")
            .authority("api.example.com")
            .header("host", "API.example.com");
        let answer = proto.send(&proxy, &dir, &same).await.unwrap();
        assert_eq!(seen(&answer)["origin"], "api", "{proto:?}");
        assert_eq!(seen(&answer)["host"], "api.example.com", "{proto:?}");
    }
}

/// RFC 9112 §3.2.2: for an absolute-form target, the target's authority replaces `Host`, both
/// for routing and for what the origin receives.
//= https://www.rfc-editor.org/rfc/rfc9112#section-3.2.2
#[tokio::test]
async fn an_absolute_form_target_replaces_the_host_header() {
    let dir = TestDir::new("absolute");
    let proxy = proxy(&dir, "").await;
    let addr = proxy.listener_addr("plain").unwrap();
    let text = raw(
        addr,
        b"GET http://api.example.com/v1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let seen: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(seen["origin"], "api");
    assert_eq!(seen["host"], "api.example.com");
}

#[tokio::test]
async fn client_forwarding_headers_are_not_trusted_by_default() {
    let dir = TestDir::new("xff");
    let proxy = proxy(&dir, "").await;
    let spoofed = Sent::get("/")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "7.7.7.7")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-aegis-region", "spoofed");
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &spoofed).await.unwrap();
        let seen = seen(&answer);
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{proto:?}");
        let scheme = match proto {
            Proto::H2 | Proto::H3 => "https",
            _ => "http",
        };
        assert_eq!(seen["x-forwarded-proto"], scheme, "{proto:?}");
        let names = seen["headers"].as_array().unwrap();
        for dropped in ["forwarded", "x-aegis-region"] {
            assert!(!names.iter().any(|n| n == dropped), "{proto:?}: {names:?}");
        }
    }
}

#[tokio::test]
async fn trusted_hops_keep_their_entries_of_every_forwarded_for_line() {
    let dir = TestDir::new("xfftrust");
    let proxy = proxy(&dir, "trusted_proxy_hops = 2").await;
    let chained = Sent::get("/")
        .header("x-forwarded-for", "6.6.6.6, 10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .header("x-forwarded-proto", "https");
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &chained).await.unwrap();
        let seen = seen(&answer);
        assert_eq!(
            seen["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1",
            "{proto:?}"
        );
        assert_eq!(seen["x-forwarded-proto"], "https", "{proto:?}");
    }
}
