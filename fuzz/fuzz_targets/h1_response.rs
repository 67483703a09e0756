//! The fast path's upstream response parser never panics, and the head it writes for the
//! client frames the body exactly as the upstream's head did: a client can never read a
//! different message boundary than the proxy (no response splitting).
#![no_main]

use aegis_proxy::http::wire::chunked::Chunked;
use aegis_proxy::http::wire::response::{self, Extra, Framing};
use libfuzzer_sys::fuzz_target;

const NO_EXTRA: Extra<'static> = Extra {
    region: None,
    alt_svc: None,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let mut out = Vec::new();
    let Ok(Some(head)) = response::parse(input, head_request, &mut out, NO_EXTRA) else {
        return;
    };
    assert!(head.len <= input.len());
    response::end_head(&mut out, flags & 2 == 2);
    // The parser keeps room for the headers the proxy adds; a head that used the room is
    // beyond what it accepts from an upstream, though any client takes it.
    let headers = out.iter().filter(|&&b| b == b'\n').count() - 2;
    if headers > 95 {
        return;
    }
    let again = response::parse(&out, head_request, &mut Vec::new(), NO_EXTRA)
        .expect("the proxy's own head parses")
        .expect("the proxy's own head is complete");
    assert_eq!(again.len, out.len());
    assert_eq!(again.status, head.status);
    assert_eq!(again.framing, head.framing);
    if head.framing == Framing::Chunked {
        if let Ok(used) = Chunked::default().advance(&input[head.len..]) {
            assert!(used <= input.len() - head.len);
        }
    }
});
