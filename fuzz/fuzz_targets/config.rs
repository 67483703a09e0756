//! The configuration loader must reject any text with errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = aegis_proxy::Config::parse(text, std::path::Path::new("/nonexistent"));
});
