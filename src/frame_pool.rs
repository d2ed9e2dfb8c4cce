//! Recycled buffers for the frames a source hands to the hub.
//!
//! A frame's JPEG is allocated on the capture thread and freed on whichever tokio worker drops
//! the last reference to it. With a fresh allocation per frame, glibc's malloc trims the capture
//! thread's heap after those frees (`madvise`, and a TLB shoot-down across CPUs) and the next
//! frame faults the pages back in, each one zeroed by the kernel: per-frame work that has
//! nothing to do with the picture (docs/benchmarks.md counts it in the test VM). A pool keeps a
//! few buffers of recent frames' size and hands them out again, so a steady stream allocates
//! nothing.
//!
//! The buffers go back to the pool when the last [`Bytes`] of a frame drops, on any thread. A
//! frame that outlives its pool (the source stopped) simply frees its buffer.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// How many idle buffers a pool keeps by default: the hub's newest frame, one being sent to
/// each of a few viewers and the one being filled rarely exceed this; beyond it buffers are
/// allocated and freed as before.
pub const DEFAULT_KEEP: usize = 6;

/// A pool of frame buffers. Cloning shares the pool.
#[derive(Clone)]
pub struct FramePool {
    shelf: Arc<Shelf>,
}

struct Shelf {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl FramePool {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> Self {
        FramePool {
            shelf: Arc::new(Shelf {
                idle: Mutex::new(Vec::with_capacity(keep)),
                keep,
            }),
        }
    }

    /// One frame: `parts` copied one after another into a recycled buffer.
    pub fn gather(&self, parts: &[&[u8]]) -> Bytes {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut buf = self.shelf.take();
        buf.clear();
        buf.reserve(len);
        for part in parts {
            buf.extend_from_slice(part);
        }
        Bytes::from_owner(Pooled {
            buf,
            shelf: Arc::downgrade(&self.shelf),
        })
    }

    /// Idle buffers on the shelf now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.shelf.lock().len()
    }
}

impl Default for FramePool {
    fn default() -> Self {
        FramePool::new(DEFAULT_KEEP)
    }
}

impl Shelf {
    /// A poisoned lock only means a thread panicked while pushing or popping a buffer; the
    /// list itself is still sound.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(buf);
        }
    }
}

/// A frame's buffer inside its `Bytes`; goes back to the shelf on drop.
struct Pooled {
    buf: Vec<u8>,
    shelf: Weak<Shelf>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(shelf) = self.shelf.upgrade() {
            shelf.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_parts_in_order() {
        let pool = FramePool::new(2);
        let frame = pool.gather(&[b"ab", b"", b"cde"]);
        assert_eq!(&frame[..], b"abcde");
        assert_eq!(&frame.slice(1..4)[..], b"bcd");
    }

    #[test]
    fn a_buffer_is_reused_once_the_last_reference_drops() {
        let pool = FramePool::new(2);
        let first = pool.gather(&[&[1u8; 1000]]);
        let at = first.as_ptr();
        let held = first.clone();
        drop(first);
        assert_eq!(pool.idle(), 0, "a viewer still holds the frame");
        drop(held);
        assert_eq!(pool.idle(), 1);
        let second = pool.gather(&[&[2u8; 900]]);
        assert_eq!(second.as_ptr(), at, "the same memory, no new allocation");
        assert!(
            second.iter().all(|&b| b == 2),
            "no stale bytes of the old frame"
        );
        assert_eq!(second.len(), 900);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit() {
        let pool = FramePool::new(2);
        let frames: Vec<Bytes> = (0..5).map(|i| pool.gather(&[&[i as u8; 64]])).collect();
        drop(frames);
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn a_frame_outliving_its_pool_frees_its_buffer() {
        let pool = FramePool::new(2);
        let frame = pool.gather(&[b"jpeg"]);
        drop(pool);
        assert_eq!(&frame[..], b"jpeg");
        drop(frame); // must not touch the dropped pool
    }

    #[test]
    fn frames_dropped_on_other_threads_come_back() {
        let pool = FramePool::new(4);
        let frames: Vec<Bytes> = (0..3).map(|_| pool.gather(&[&[7u8; 4096]])).collect();
        std::thread::spawn(move || drop(frames)).join().unwrap();
        assert_eq!(pool.idle(), 3);
    }
}
