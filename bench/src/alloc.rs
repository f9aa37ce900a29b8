//! A global allocator that counts live heap bytes, so memory is measured exactly (and
//! without the noise of RSS) around one phase of a benchmark.
//!
//! The count is kept in cache-line-sized shards, one per thread (threads beyond
//! [`SHARDS`] share), so counting does not bounce one cache line between the runtime's
//! worker threads on every allocation: with a single shared counter the counting itself
//! was a measurable share of the delegation benchmark, which allocates far more per
//! request than the echo it is compared with.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

/// Number of counter shards.
const SHARDS: usize = 64;

/// One counter on its own cache line. Signed: memory freed on another thread than the
/// one that allocated it is subtracted there.
#[repr(align(64))]
struct Shard(AtomicIsize);

static LIVE: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without drop glue: no allocation and no destructor registration,
    // which an allocator must not cause.
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> &'static AtomicIsize {
    let i = MY_SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        })
        // A thread being torn down: any shard keeps the sum right.
        .unwrap_or(0);
    &LIVE[i].0
}

fn add(bytes: usize) {
    shard().fetch_add(bytes as isize, Ordering::Relaxed);
}

fn sub(bytes: usize) {
    shard().fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shard().fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

/// Heap bytes allocated through Rust and not yet freed (the sum of the shards; exact
/// when no other thread allocates during the call).
pub fn live_bytes() -> usize {
    let total: isize = LIVE.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    total.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_live_across_threads() {
        // Other tests allocate and free in parallel: allow them a little.
        const SLACK: usize = 64 * 1024;
        const BLOCK: usize = 1 << 20;
        let before = live_bytes();
        let block: Vec<u8> = Vec::with_capacity(BLOCK);
        let during = live_bytes();
        assert!(during + SLACK >= before + BLOCK, "{before} -> {during}");
        // Freed on another thread: that thread's shard goes down, the sum stays right.
        std::thread::spawn(move || drop(block)).join().unwrap();
        let after = live_bytes();
        assert!(
            after < during && during - after + SLACK >= BLOCK,
            "{during} -> {after}"
        );
    }
}
