//! The rules of `[regions]`, `[carbon]` and cluster carbon policies, one test each, asserting
//! the message a user reads.

use std::path::Path;

use super::super::parse;
use super::super::tests::{errors, no_env};

const CARBON: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
cluster = "api"

[regions.eu-central]
zone = "DE"
intensity = 350

[regions.eu-north]
zone = "NO"

[carbon]
feeds = ["file", "static"]
file = { path = "carbon.csv" }

[clusters.api]
carbon = "greenest"
max_share = 0.6
regions = { eu-central = ["127.0.0.1:9000"], eu-north = ["127.0.0.1:9001", "127.0.0.1:9002"] }
"#;

#[test]
fn regions_and_carbon_parse() {
    let config = parse(CARBON, Path::new("/etc/aegis"), &no_env).unwrap();
    assert_eq!(config.regions.len(), 2);
    assert_eq!(config.regions[0].intensity, Some(350.0));
    assert_eq!(
        config.carbon.file.as_deref(),
        Some(Path::new("/etc/aegis/carbon.csv"))
    );
    // The feed file does not exist: run would serve with no data from it, so validate warns.
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "carbon.file.path, line 18: /etc/aegis/carbon.csv does not exist (yet): the file feed \
          has no data until it does"
        ]
    );
    let cluster = &config.clusters[0];
    assert_eq!(cluster.endpoint_regions, [Some(0), Some(1), Some(1)]);
    assert_eq!(cluster.carbon.policy, aegis_carbon::Policy::Greenest);
    assert_eq!(cluster.carbon.max_share, 0.6);
}

#[test]
fn cluster_region_must_exist() {
    let text = CARBON.replace(
        "eu-north = [\"127.0.0.1:9001\"",
        "eu-west = [\"127.0.0.1:9001\"",
    );
    assert_eq!(
        errors(&text),
        ["clusters.api.regions.eu-west, line 23: no region named \"eu-west\"; configured: \"eu-central\", \"eu-north\""]
    );
}

#[test]
fn carbon_policy_needs_regions() {
    let text = CARBON.replace(
        "regions = { eu-central = [\"127.0.0.1:9000\"], eu-north = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"] }",
        "endpoints = [\"127.0.0.1:9000\"]",
    );
    assert_eq!(
        errors(&text),
        [
            "clusters.api.carbon, line 21: a carbon policy needs endpoints grouped by regions: \
          write regions = { REGION = [\"host:port\"] } instead of endpoints"
        ]
    );
}

#[test]
fn max_share_is_a_fraction() {
    let text = CARBON.replace("max_share = 0.6", "max_share = 60");
    assert_eq!(
        errors(&text),
        ["clusters.api.max_share, line 22: 60 is outside 0.01..=1"]
    );
}

#[test]
fn file_feed_needs_a_path() {
    let text = CARBON.replace("file = { path = \"carbon.csv\" }\n", "");
    assert_eq!(
        errors(&text),
        ["carbon.feeds, line 17: the file feed needs carbon.file = { path = \"...\" }"]
    );
}

#[test]
fn feeds_of_different_kinds_are_not_ranked_together() {
    let text = CARBON.replace(
        "feeds = [\"file\", \"static\"]",
        "feeds = [\"uk\", \"static\"]",
    );
    assert_eq!(
        errors(&text),
        ["carbon.feeds, line 17: feeds of different kinds would be ranked together: uk reports average direct, static reports average lifecycle; list feeds of one signal and basis (set carbon.signal and carbon.basis for file and static values, carbon.electricitymaps.basis for Electricity Maps)"]
    );
    let declared = text.replace("[carbon]\n", "[carbon]\nbasis = \"direct\"\n");
    assert!(parse(&declared, Path::new("."), &no_env).is_ok());
}

#[test]
fn an_unset_credential_variable_is_named() {
    let text = CARBON.replace(
        "feeds = [\"file\", \"static\"]",
        "feeds = [\"electricitymaps\", \"static\"]",
    );
    assert_eq!(
        errors(&text),
        ["carbon.electricitymaps.token_env, line 17: environment variable ELECTRICITYMAPS_TOKEN is not set (the feed needs it to authenticate)"]
    );
    let env = |name: &str| (name == "ELECTRICITYMAPS_TOKEN").then(|| "t".to_owned());
    let config = parse(&text, Path::new("."), &env).unwrap();
    let em = config.carbon.electricitymaps.unwrap();
    assert_eq!(em.base_url, "https://api.electricitymaps.com");
}

#[test]
fn uk_region_ids_are_the_apis() {
    let text = CARBON.replace("zone = \"NO\"", "zone = \"NO\"\nuk_region = 18");
    assert_eq!(
        errors(&text),
        ["regions.eu-north.uk_region, line 15: 18 is not a UK Carbon Intensity region id (1..=17)"]
    );
}

#[test]
fn rtt_probe_and_baseline_settings_are_read() {
    let text = CARBON
        .replace("zone = \"NO\"", "zone = \"NO\"\nrtt_ms = 33")
        .replace(
            "[carbon]\n",
            "[carbon]\nbaseline = \"round_robin\"\nprobe_interval_ms = 5000\nprobe_timeout_ms = 500\n",
        );
    let config = parse(&text, Path::new("."), &no_env).unwrap();
    assert_eq!(config.regions[1].rtt_ms, Some(33.0));
    assert_eq!(config.carbon.baseline, crate::config::Baseline::RoundRobin);
    assert_eq!(
        config.carbon.probe_interval,
        std::time::Duration::from_secs(5)
    );
    let bad = CARBON.replace("zone = \"NO\"", "zone = \"NO\"\nrtt_ms = -1");
    assert_eq!(
        errors(&bad),
        ["regions.eu-north.rtt_ms, line 15: -1 is outside 0..=60000"]
    );
}

#[test]
fn the_carbon_aware_sdk_feed_declares_what_it_reports() {
    let text = CARBON.replace(
        "feeds = [\"file\", \"static\"]",
        "feeds = [\"carbon_aware_sdk\", \"static\"]",
    );
    assert_eq!(
        errors(&text),
        ["carbon.feeds, line 17: the carbon_aware_sdk feed needs carbon.carbon_aware_sdk = { base_url = \"...\", signal = \"...\", basis = \"...\" }"]
    );
    let with = text.replace(
        "[carbon]\n",
        "[carbon]\ncarbon_aware_sdk = { base_url = \"http://sdk.internal:8080\", signal = \"average\", basis = \"lifecycle\" }\n",
    );
    let config = parse(&with, Path::new("."), &no_env).unwrap();
    assert_eq!(
        config.carbon.carbon_aware_sdk.unwrap().api.base_url,
        "http://sdk.internal:8080"
    );
}

#[test]
fn carbon_without_regions_is_a_warning_and_a_missing_region_says_what_to_add() {
    let plain =
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[routes]]\ncluster = \"c\"\n";
    let text = format!(
        "{plain}[clusters.c]\nendpoints = [\"127.0.0.1:9\"]\n[carbon]\nfeeds = [\"static\"]\n"
    );
    let config = parse(&text, Path::new("."), &no_env).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "carbon.feeds, line 9: is set but no [regions.NAME] table is: the feeds have no zone \
          to read, and no cluster can route by carbon"
        ]
    );
    let text = format!(
        "{plain}[clusters.c]\ncarbon = \"greenest\"\nregions = {{ eu = [\"127.0.0.1:9\"] }}\n"
    );
    assert_eq!(
        errors(&text),
        ["clusters.c.regions.eu, line 8: no region named \"eu\": add a [regions.eu] table with its grid zone"]
    );
}

#[test]
fn feed_settings_whose_feed_is_not_listed_are_a_warning() {
    let text = CARBON.replace(
        "file = { path = \"carbon.csv\" }",
        "file = { path = \"carbon.csv\" }\nuk = { timeout_ms = 500 }",
    );
    let config = parse(&text, Path::new("/etc/aegis"), &no_env).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.contains(
            &"carbon.feeds, line 17: does not list \"uk\", so carbon.uk is ignored (add \"uk\" \
              to the feeds, or remove carbon.uk)"
                .to_owned()
        ),
        "{warnings:?}"
    );
    assert!(config.carbon.uk.is_none());
}
