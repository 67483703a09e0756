use super::*;

/// Feeds `input` in pieces of `step` bytes; returns what hyper would see.
fn pass(input: &[u8], step: usize) -> (Vec<u8>, State) {
    let mut guard = FramingGuard::new(());
    let mut seen = Vec::new();
    for piece in input.chunks(step) {
        if guard.state == State::Rejected {
            break;
        }
        let keep = guard.inspect(piece);
        seen.extend_from_slice(&piece[..keep]);
        if guard.state == State::Rejected {
            seen.extend_from_slice(POISON);
        }
    }
    (seen, guard.state)
}

const SMUGGLE: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn clean_pipelined_requests_pass_untouched_at_any_split() {
    let input: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nxyz\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    for step in [1, 2, 7, 64, input.len()] {
        let (seen, state) = pass(input, step);
        assert_eq!(seen, input, "step {step}");
        assert_eq!(state, State::Head, "step {step}");
    }
}

#[test]
fn length_and_chunked_together_are_neutralised_at_any_split() {
    for step in [1, 3, 16, SMUGGLE.len()] {
        let (seen, state) = pass(SMUGGLE, step);
        assert_eq!(state, State::Rejected, "step {step}");
        assert!(seen.ends_with(POISON), "step {step}: head not poisoned");
        assert!(
            !seen.windows(6).any(|w| w == b"/admin"),
            "step {step}: smuggled request passed"
        );
        assert!(httparse::Request::new(&mut [httparse::EMPTY_HEADER; 16])
            .parse(&seen)
            .is_err());
    }
}

#[test]
fn smuggling_after_a_clean_request_keeps_the_clean_one() {
    let clean: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let input = [clean, SMUGGLE].concat();
    let (seen, state) = pass(&input, input.len());
    assert_eq!(state, State::Rejected);
    assert_eq!(seen, [clean, POISON].concat());
}

#[test]
fn http2_preface_switches_to_passthrough() {
    let (seen, state) = pass(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", 5);
    assert_eq!(state, State::Passthrough);
    assert_eq!(seen.len(), 28);
}
