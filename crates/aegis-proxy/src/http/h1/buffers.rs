//! Reused I/O buffers: a request takes its buffers from a per-thread free list and returns them,
//! so the hot path does not allocate and an idle connection holds none.

use std::cell::RefCell;

/// Capacity of every buffer (one read of a head or a body piece).
pub(super) const SIZE: usize = super::super::wire::READ_SIZE;
/// Buffers kept per thread.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least [`SIZE`] bytes.
pub(super) fn take() -> Vec<u8> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Returns a buffer for reuse; one that grew far past [`SIZE`] is freed instead.
pub(super) fn give(mut buf: Vec<u8>) {
    if buf.capacity() < SIZE || buf.capacity() > 4 * SIZE {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_oversized_ones_are_dropped() {
        let mut buf = take();
        buf.extend_from_slice(b"left over");
        let ptr = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0));
        give(Vec::with_capacity(8 * SIZE));
        assert!(take().capacity() <= 4 * SIZE);
    }
}
