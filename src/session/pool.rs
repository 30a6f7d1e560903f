//! A small pool of payload buffers. Tunnel readers take a buffer for every DATA frame and
//! streams give it back once the application has read it; reusing them avoids a fresh
//! allocation, and the page faults glibc causes by returning such blocks to the OS, per frame.

use crossbeam_channel::{Receiver, Sender};

/// Payloads smaller than this come straight from the allocator (cheap at that size).
const MIN_POOLED: usize = 16 * 1024;

pub(crate) struct BufPool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl BufPool {
    /// A pool keeping at most `count` idle buffers.
    pub(crate) fn new(count: usize) -> BufPool {
        let (tx, rx) = crossbeam_channel::bounded(count);
        BufPool { tx, rx }
    }

    /// An empty buffer with capacity for `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len >= MIN_POOLED {
            // A pooled buffer fits if it is not more than twice as large as needed, which
            // bounds the memory a small frame can pin.
            if let Ok(mut v) = self.rx.try_recv() {
                if v.capacity() >= len && v.capacity() <= 2 * len {
                    v.clear();
                    return v;
                }
            }
        }
        Vec::with_capacity(len)
    }

    /// Return a buffer for reuse (dropped when the pool is full or it is small).
    pub(crate) fn give(&self, v: Vec<u8>) {
        if v.capacity() >= MIN_POOLED {
            let _ = self.tx.try_send(v);
        }
    }

    /// Free idle buffers beyond `keep` (the session went quiet).
    pub(crate) fn trim(&self, keep: usize) {
        while self.rx.len() > keep {
            if self.rx.try_recv().is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_a_fitting_size_only() {
        let p = BufPool::new(2);
        let v = p.take(64 * 1024);
        let ptr = v.as_ptr();
        p.give(v);
        let again = p.take(60 * 1024);
        assert_eq!(again.as_ptr(), ptr, "a fitting buffer is reused");
        assert!(again.is_empty());
        p.give(again);
        // Far too large for a 20 KiB frame: not handed out (and dropped).
        let small = p.take(20 * 1024);
        assert!(small.capacity() < 64 * 1024);
        // Small buffers are never pooled.
        p.give(vec![0u8; 100]);
        assert!(p.rx.is_empty());
        p.give(vec![0u8; 32 * 1024]);
        p.give(vec![0u8; 32 * 1024]);
        p.trim(1);
        assert_eq!(p.rx.len(), 1);
    }
}
