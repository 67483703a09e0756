//! The path normaliser and the host validator: any input, any rules; never a panic, and what
//! is forwarded is normal (normalising it again changes nothing, no dot segment survives).
#![no_main]

use std::borrow::Cow;

use aegis_proxy::http::{host, path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, u8, Vec<u8>)| {
    let (raw, flags, host_value) = input;
    let rules = path::PathRules {
        reject_unnormalized: flags & 1 != 0,
        merge_slashes: flags & 2 != 0,
        encoded_slashes: match flags >> 2 & 3 {
            0 => path::EncodedSlashes::Keep,
            1 => path::EncodedSlashes::Reject,
            _ => path::EncodedSlashes::Decode,
        },
    };
    if let Ok(normal) = path::normalize(&raw, rules) {
        if rules.reject_unnormalized {
            assert!(matches!(normal, Cow::Borrowed(_)), "{raw:?}");
        }
        if raw.starts_with('/') {
            assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
            assert!(normal.is_ascii(), "{raw:?} -> {normal:?}");
            let again = path::normalize(&normal, rules).expect("normal paths stay accepted");
            assert_eq!(again, normal, "{raw:?}");
            assert!(
                !normal.split('/').any(|s| s == "." || s == ".."),
                "{raw:?} -> {normal:?}"
            );
            if rules.merge_slashes {
                assert!(!normal.contains("//"), "{raw:?} -> {normal:?}");
            }
        }
    }
    if let Ok(name) = host::validate(&host_value) {
        assert!(!name.contains('@'), "{host_value:?}");
        assert!(name.starts_with('[') || !name.contains(':'), "{host_value:?}");
    }
});
