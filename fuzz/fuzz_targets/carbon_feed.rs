//! Every carbon feed parser must turn any response body into values or an error, never a panic.
#![no_main]

use aegis_proxy::carbon_feed::parse_feed_response;
use aegis_proxy::config::FeedKind;
use libfuzzer_sys::fuzz_target;

const FEEDS: [FeedKind; 5] = [
    FeedKind::Electricitymaps,
    FeedKind::Uk,
    FeedKind::Watttime,
    FeedKind::File,
    FeedKind::CarbonAwareSdk,
];

fuzz_target!(|input: (u8, &[u8])| {
    let (which, body) = input;
    let feed = FEEDS[usize::from(which) % FEEDS.len()];
    // Parsed values may be anything a provider sends (NaN from a CSV, negative, huge): the
    // feed's plausibility check drops those before ranking. Parsing must only never panic.
    let _ = parse_feed_response(feed, body);
});
