//! The HTTP/1 framing guard must never panic, and must pass clean input through unchanged
//! whatever the read sizes.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use aegis_proxy::http::framing::FramingGuard;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let mut guard = FramingGuard::new(input);
    let mut cx = Context::from_waker(Waker::noop());
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; step + 8];
    loop {
        let mut buf = ReadBuf::new(&mut chunk[..]);
        // Read at most `step` bytes at a time; the guard may append its 5-byte poison.
        let mut limited = buf.take(step);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let n = limited.filled().len();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&chunk[..n]);
            }
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    // Without both framing headers nothing is withheld.
    let text = String::from_utf8_lossy(input).to_ascii_lowercase();
    if !(text.contains("content-length") && text.contains("transfer-encoding")) {
        assert_eq!(seen, input);
    }
});
