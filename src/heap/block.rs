//! Free blocks: the only code of the heap that reads or writes the heap's
//! memory.
//!
//! A free block holds two words: `next`, the address of the next block of
//! its list (0 at the end), and `cookie`, `secret ^ address` with the
//! heap's random secret. Allocated blocks carry no header: their 16 bytes
//! and more belong to the caller. `Free` refuses a block that already
//! carries its cookie (a double free); allocating a block clears it.
//!
//! # Soundness
//!
//! The functions here are safe to call because the heap module (their only
//! callers: they are `pub(super)`) keeps these invariants:
//!
//! 1. [`carve`] is given a slab the heap's manager has just committed
//!    read-write for this heap and that no list holds.
//! 2. [`check_not_free`] is given the start of a block of a slab that was
//!    carved (the chunk table publishes a slab's class only after
//!    `carve` returns, and `locate` checks the block boundary).
//! 3. A [`FreeList`] holds only free blocks of carved slabs of one heap,
//!    and is read or changed only by a call on that heap (so while it is
//!    alive): the lists of thread caches whose heap is gone are dropped
//!    without being read. A list is a value that moves (never copied) and
//!    lives in one place at a time: a thread's cache (a `Cell` only that
//!    thread reaches), the heap's shared lists (under their lock), or the
//!    call moving it; so its blocks are in one thread's hands at a time.
//! 4. A heap never decommits a carved slab; its memory goes only when the
//!    heap is dropped (and then no call on it is running).
//!
//! What they cannot protect against is the caller's own undefined
//! behaviour: writing to a block after freeing it, or freeing one block
//! on two threads at once, breaks a list (as with any `malloc`), and a
//! manager shut down while a heap call is running on another thread
//! unmaps the memory under it (the host must stop using its heaps first).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr::with_exposed_provenance_mut;

/// Reads word `i` (0: next, 1: cookie) of the block at `block`.
///
/// # Safety
///
/// `block` is the 16-byte-aligned start of a block of at least 16 bytes in
/// committed, readable memory of a live heap, and no other thread writes
/// the word meanwhile.
#[inline(always)]
unsafe fn read_word(block: usize, i: usize) -> usize {
    // SAFETY: in bounds (the block has 16 bytes), aligned, readable and not
    // written concurrently (the caller's contract).
    unsafe { with_exposed_provenance_mut::<usize>(block).add(i).read() }
}

/// Writes word `i` (0: next, 1: cookie) of the block at `block`.
///
/// # Safety
///
/// As [`read_word`], and the memory is writable and not accessed by any
/// other thread meanwhile (the block is free and in the caller's hands).
#[inline(always)]
unsafe fn write_word(block: usize, i: usize, value: usize) {
    // SAFETY: in bounds, aligned, writable and exclusively ours (the
    // caller's contract).
    unsafe {
        with_exposed_provenance_mut::<usize>(block)
            .add(i)
            .write(value)
    }
}

/// A block validated for `Free`: the start of a block of a carved slab
/// that does not carry its cookie (so it is allocated). Made only by
/// [`check_not_free`].
#[derive(Debug)]
pub(super) struct FreeBlock(usize);

/// A list of free blocks threaded through their `next` words, the hot end
/// at the head. Not `Copy` or `Clone`: a list owns its blocks, and moves.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct FreeList {
    head: usize,
    len: u32,
}

impl FreeList {
    /// The empty list.
    pub(super) const EMPTY: Self = Self { head: 0, len: 0 };

    /// The number of blocks.
    #[inline]
    pub(super) fn len(&self) -> u32 {
        self.len
    }

    /// Whether the list has no block.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head == 0
    }

    /// Takes the head block for allocation, clearing its cookie.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<usize> {
        let block = self.head;
        if block == 0 {
            return None;
        }
        // SAFETY: the head of a list is a free block of a carved slab of
        // the live heap being called (invariants 3 and 4); being in this
        // list, it is in our hands alone.
        unsafe {
            self.head = read_word(block, 0);
            write_word(block, 1, 0);
        }
        self.len -= 1;
        Some(block)
    }

    /// Puts a freed block at the head, with its cookie.
    #[inline]
    pub(super) fn push(&mut self, block: FreeBlock, secret: usize) {
        let FreeBlock(block) = block;
        // SAFETY: `block` is the start of an allocated block of a carved
        // slab (invariant 2, checked by `check_not_free`) that the caller
        // gives back: it is ours until it leaves the list.
        unsafe {
            write_word(block, 0, self.head);
            write_word(block, 1, secret ^ block);
        }
        self.head = block;
        self.len += 1;
    }

    /// Runs `f` on the list inside `cell`, in place (without moving it out
    /// and back, which costs the hit paths two stores each).
    #[inline(always)]
    pub(super) fn in_cell<R>(cell: &Cell<FreeList>, f: impl FnOnce(&mut FreeList) -> R) -> R {
        // SAFETY: a `Cell` never hands out references to its content and
        // is not `Sync`, so while `f` runs this is the only reference to
        // the list (`f` is given no access to `cell`, and blocks never lie
        // in a thread's cache).
        f(unsafe { &mut *cell.as_ptr() })
    }

    /// Puts every block of `other` in front of this list's (walking
    /// `other` when this list is not empty).
    pub(super) fn prepend(&mut self, other: FreeList) {
        if other.is_empty() {
            return;
        }
        if !self.is_empty() {
            let mut last = other.head;
            loop {
                // SAFETY: a block of `other`, a list of the same live heap
                // (invariant 3), in our hands while `other` is.
                let next = unsafe { read_word(last, 0) };
                if next == 0 {
                    break;
                }
                last = next;
            }
            // SAFETY: as above.
            unsafe { write_word(last, 0, self.head) };
        }
        self.head = other.head;
        self.len += other.len;
    }

    /// Keeps the first `keep` blocks and returns the rest.
    pub(super) fn split_off(&mut self, keep: u32) -> FreeList {
        if keep == 0 {
            return std::mem::take(self);
        }
        if keep >= self.len {
            return Self::EMPTY;
        }
        let mut last = self.head;
        for _ in 1..keep {
            // SAFETY: a block of this list (invariant 3).
            last = unsafe { read_word(last, 0) };
        }
        // SAFETY: as above; `last` becomes this list's last block.
        let rest_head = unsafe { read_word(last, 0) };
        // SAFETY: as above.
        unsafe { write_word(last, 0, 0) };
        let rest = FreeList {
            head: rest_head,
            len: self.len - keep,
        };
        self.len = keep;
        rest
    }

    /// Every block of the list, head first (for tests and checks).
    #[cfg(test)]
    pub(super) fn blocks(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut at = self.head;
        while at != 0 {
            out.push(at);
            // SAFETY: a block of this list (invariant 3).
            at = unsafe { read_word(at, 0) };
        }
        out
    }
}

/// Makes the `blocks` blocks of `size` bytes from `start` a free list (in
/// address order), each with its cookie.
pub(super) fn carve(start: usize, size: usize, blocks: u32, secret: usize) -> FreeList {
    debug_assert!(blocks > 0 && size >= 16 && start.is_multiple_of(16) && size.is_multiple_of(16));
    let mut at = start;
    for _ in 1..blocks {
        // SAFETY: `[start, start + size * blocks)` lies in a slab just
        // committed read-write for this heap, which no list holds
        // (invariant 1).
        unsafe {
            write_word(at, 0, at + size);
            write_word(at, 1, secret ^ at);
        }
        at += size;
    }
    // SAFETY: the last block, as above.
    unsafe {
        write_word(at, 0, 0);
        write_word(at, 1, secret ^ at);
    }
    FreeList {
        head: start,
        len: blocks,
    }
}

/// The block at `block` made ready to free, or `None` if it carries its
/// cookie: it is free already (a double free), or, with probability
/// 2^-64, the caller's data in its second word equals the cookie (then the
/// block leaks; it is never handed out twice).
#[inline]
pub(super) fn check_not_free(block: usize, secret: usize) -> Option<FreeBlock> {
    // SAFETY: `block` starts a block of a carved slab of the live heap
    // being called (invariant 2).
    let cookie = unsafe { read_word(block, 1) };
    (cookie != secret ^ block).then_some(FreeBlock(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-byte-aligned buffer standing in for a slab.
    fn slab(words: usize) -> Vec<u128> {
        vec![0; words.div_ceil(2)]
    }

    #[test]
    fn carve_pop_push_split_prepend() {
        let secret = 0x5eed_0000_0000_0007;
        let mut memory = slab(64);
        let start = memory.as_mut_ptr().expose_provenance();
        let mut list = carve(start, 32, 16, secret);
        assert_eq!(list.len(), 16);
        assert_eq!(
            list.blocks(),
            (0..16).map(|i| start + 32 * i).collect::<Vec<_>>()
        );
        // Every free block carries its cookie.
        assert!(check_not_free(start, secret).is_none());
        let a = list.pop().unwrap();
        assert_eq!(a, start);
        let freed = check_not_free(a, secret).expect("allocated");
        assert!(check_not_free(a + 32, secret).is_none());
        list.push(freed, secret);
        assert!(check_not_free(a, secret).is_none(), "double free refused");
        assert_eq!(list.len(), 16);
        let rest = list.split_off(5);
        assert_eq!((list.len(), rest.len()), (5, 11));
        assert_eq!(list.blocks().len(), 5);
        assert_eq!(rest.blocks().len(), 11);
        let mut back = rest;
        back.prepend(list);
        let mut empty = FreeList::EMPTY;
        empty.prepend(back);
        let mut back = empty;
        assert_eq!(back.len(), 16);
        let mut all = back.blocks();
        all.sort_unstable();
        assert_eq!(all, (0..16).map(|i| start + 32 * i).collect::<Vec<_>>());
        while back.pop().is_some() {}
        assert!(back.is_empty());
        assert_eq!(back.len(), 0);
        drop(memory);
    }
}
