//! A global allocator that aborts when the Rust heap in use passes a bound,
//! so an input that makes a parser allocate far beyond its size is a crash
//! libFuzzer reports and keeps, like a panic. (libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer runtime, which the stable toolchain
//! does not have; its `-rss_limit_mb` still backs this up.)

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most Rust heap in use at once, for inputs of up to libFuzzer's
/// `-max_len` (64 KiB in `scripts/fuzz.sh`). The webhook's budget for a
/// whole 3 MiB request is 48 MiB of RSS (docs/performance.md).
pub const LIMIT: usize = 64 << 20;

/// [`System`], counting.
#[derive(Debug)]
pub struct Bounded {
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl Bounded {
    /// An allocator with nothing allocated.
    pub const fn new() -> Self {
        Bounded { in_use: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Bytes in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from what is in use now.
    pub fn reset_peak(&self) {
        self.peak.store(self.in_use(), Ordering::Relaxed);
    }

    /// The most bytes in use since [`Bounded::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn charge(&self, size: usize) {
        let now = self.in_use.fetch_add(size, Ordering::Relaxed) + size;
        self.peak.fetch_max(now, Ordering::Relaxed);
        if now > LIMIT {
            // No allocation here: write the message with a stack buffer.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"sidekey-fuzz: the Rust heap passed the 64 MiB bound (alloc::LIMIT)\n",
            );
            std::process::abort();
        }
    }
}

impl Default for Bounded {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.charge(new_size - layout.size());
        } else {
            self.in_use.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
