//! The chunked-body follower never panics and finds the same end whatever the read sizes.
#![no_main]

use aegis_proxy::http::wire::chunked::Chunked;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut body = Chunked::default();
        body.advance(input).map(|used| (used, body.is_done(), body.data_bytes()))
    };
    let step = usize::from(step % 32) + 1;
    let mut body = Chunked::default();
    let mut used = 0;
    let mut pieces = Ok(());
    for piece in input.chunks(step) {
        match body.advance(piece) {
            Ok(n) => {
                used += n;
                if body.is_done() {
                    break;
                }
            }
            Err(e) => {
                pieces = Err(e);
                break;
            }
        }
    }
    match (whole, pieces) {
        (Ok(whole), Ok(())) => assert_eq!(whole, (used, body.is_done(), body.data_bytes())),
        (Err(_), Err(_)) => {}
        (whole, pieces) => panic!("one read: {whole:?}, in pieces: {pieces:?}"),
    }
});
