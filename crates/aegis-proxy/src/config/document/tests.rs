//! Schema mistakes: all of them in one run, in file order, each with its fix.

use std::path::Path;

use crate::config::validate::tests::{errors, no_env};
use crate::config::Config;

/// Four schema mistakes and one semantic one, in different tables: one run reports each.
#[test]
fn every_schema_mistake_is_reported_in_one_run_in_file_order() {
    let text = r#"
[admin]
listen = "127.0.0.1:9901"
tokn_env = "ADMIN_TOKEN"

[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
protocol = ["http/1.1"]

[[routes]]
host = "*"
cluster = "apl"

[clusters.api]
endpoint = ["127.0.0.1:9000"]
connect_timeout_ms = "5s"

[clusters.b]
endpoints = ["127.0.0.1:9001"]
lb = "round_robbin"
"#;
    assert_eq!(
        errors(text),
        [
            "admin.tokn_env, line 4: unknown key `tokn_env`; did you mean `token_env`?",
            "listeners[0].protocol, line 9: unknown key `protocol`; did you mean `protocols`?",
            "routes[0].cluster, line 13: no cluster named \"apl\"; did you mean \"api\"?",
            "clusters.api, line 15: needs endpoints (or regions)",
            "clusters.api.endpoint, line 16: unknown key `endpoint`; did you mean `endpoints`?",
            "clusters.api.connect_timeout_ms, line 17: expected integer milliseconds, e.g. 5000; found string \"5s\"",
            "clusters.b.lb, line 21: unknown value `round_robbin`; did you mean `round_robin`?",
        ]
    );
}

#[test]
fn a_key_far_from_every_known_one_lists_them() {
    let text = "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nzzz = 1\n";
    let found = errors(text);
    assert!(
        found[0].starts_with(
            "listeners[0].zzz, line 4: unknown key `zzz`; expected one of `name`, `listen`, "
        ),
        "{found:?}"
    );
}

#[test]
fn a_duration_written_as_text_gets_the_integer_to_write() {
    let text =
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nidle_timeout_ms = \"250ms\"\n\
                max_header_bytes = \"64k\"\n";
    let found = errors(text);
    assert_eq!(
        &found[..2],
        [
            "listeners[0].idle_timeout_ms, line 4: expected integer milliseconds, e.g. 250; found string \"250ms\"",
            "listeners[0].max_header_bytes, line 5: expected an integer number of bytes, e.g. 65536; found string \"64k\"",
        ]
    );
}

/// A required key of the wrong type is reported once: the placeholder put in its place to
/// read on must not produce a second, semantic complaint about the same key.
#[test]
fn a_wrong_type_on_a_required_key_is_reported_once() {
    let text = "[[listeners]]\nname = \"a\"\nlisten = 8080\n\n[[routes]]\ncluster = \"c\"\n\n\
                [clusters.c]\nendpoints = \"127.0.0.1:9000\"\nmax_pending_requests = true\n";
    assert_eq!(
        errors(text),
        [
            "listeners[0].listen, line 3: expected a string, found integer `8080`",
            "clusters.c.endpoints, line 9: expected an array, found string \"127.0.0.1:9000\"",
            "clusters.c.max_pending_requests, line 10: expected an integer, found boolean `true`",
        ]
    );
}

#[test]
fn a_missing_required_key_is_named_beside_other_mistakes() {
    let text =
        "[[listeners]]\nlisten = \"127.0.0.1:1\"\nbacklog = -1\n\n[[routes]]\ncluster = \"c\"\n\n\
                [clusters.c]\nendpoints = [\"127.0.0.1:9000\"]\n";
    let found = errors(text);
    assert_eq!(found[0], "listeners[0], line 1: missing key `name`");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[1].starts_with("listeners[0].backlog, line 3: "),
        "{found:?}"
    );
}

#[test]
fn every_syntax_error_is_reported_with_its_line() {
    let text = "[admin]\nlisten = \n\n[[listeners]]\nname = \"a\nlisten = \"127.0.0.1:1\"\n";
    let found = errors(text);
    assert!(found.len() >= 2, "{found:?}");
    assert!(found[0].starts_with("line 2: "), "{found:?}");
    assert!(found.iter().any(|e| e.starts_with("line 5: ")), "{found:?}");
}

#[test]
fn a_valid_file_reads_unchanged() {
    let text =
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\ncluster = \"c\"\n\n\
                [clusters.c]\nendpoints = [\"127.0.0.1:9000\"]\n";
    let config = Config::parse_with_env(text, Path::new("."), &no_env).unwrap();
    assert_eq!(config.listeners[0].name, "a");
}
