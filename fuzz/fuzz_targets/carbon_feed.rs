//! Every carbon feed parser must turn any response body into values or an error, never a panic.
#![no_main]

use aegis_proxy::carbon_feed::parse_feed_response;
use aegis_proxy::config::FeedKind;
use libfuzzer_sys::fuzz_target;

const FEEDS: [FeedKind; 4] = [
    FeedKind::Electricitymaps,
    FeedKind::Uk,
    FeedKind::Watttime,
    FeedKind::File,
];

fuzz_target!(|input: (u8, &[u8])| {
    let (which, body) = input;
    let feed = FEEDS[usize::from(which) % FEEDS.len()];
    if let Ok(values) = parse_feed_response(feed, body) {
        // A parsed value is a number the router can compare.
        assert!(values.iter().all(|v| !v.is_nan()), "{feed:?}: {values:?}");
    }
});
