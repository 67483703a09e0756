//! The carbon trace parser and timestamp parser must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(trace) = aegis_carbon::trace::Trace::parse(text) {
        let _ = trace.row_at(0);
    }
    let _ = aegis_carbon::trace::parse_rfc3339(text);
});
