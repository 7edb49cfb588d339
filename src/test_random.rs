//! A small deterministic random sequence for the unit tests that drive
//! random changes (xorshift64): the same steps in every run, and no
//! dependency for it.

/// A generator from `seed` (not 0): each call gives a value in `0..n`
/// (`n` > 0).
pub(crate) fn below(seed: u64) -> impl FnMut(usize) -> usize {
    debug_assert_ne!(seed, 0);
    let mut x = seed;
    move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    }
}
