//! The fuzzer's reading of its input: bytes decoded with the `arbitrary`
//! crate into a sequence of the harness's abstract operations ([`Op`]).
//!
//! The grammar is the property test's (`op()` and its helpers in
//! `main.rs`), choice for choice and weight for weight, so that the fuzzer
//! and the property test explore the same language of calls: reservations
//! at NULL and in the arena, commits, resets and undos, decommits,
//! releases at interior offsets, protections, queries, writes of sampled
//! bytes, raw type and protection bits (undefined ones included), the
//! foreign targets, and write-watched reservations with `GetWriteWatch`
//! and `ResetWriteWatch`. Keep the two in step.
//!
//! Decoding never fails: when the input runs out, `Unstructured` answers
//! the first choice of every range, and the sequence stops at
//! [`MAX_OPS`] operations or at the end of the input.

use crate::harness::{
    ALLOCATION_TYPE_BITS, ARENA_SLOTS, BASES, FREE_TYPES, Foreign, ForeignCall, Len, Loc,
    MAX_WATCH, MODIFIERS, Op, Prot,
};
use crate::reference::{GRANULE, PAGE, SAMPLES};
use arbitrary::{Result, Unstructured};

/// The longest sequence one input decodes into (the property test's
/// sequences are 50 operations; the fuzzer may go a little further).
pub const MAX_OPS: usize = 64;

/// The operations `data` stands for.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// An index into `weights`, each chosen in proportion to its weight (as
/// proptest's `prop_oneof!` does).
fn weighted(u: &mut Unstructured, weights: &[u32]) -> Result<usize> {
    let total: u32 = weights.iter().sum();
    let mut x = u.int_in_range(0..=total - 1)?;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return Ok(i);
        }
        x -= w;
    }
    unreachable!("x < total")
}

/// A number in `lo..hi`.
fn below(u: &mut Unstructured, lo: usize, hi: usize) -> Result<usize> {
    u.int_in_range(lo..=hi - 1)
}

/// `true` with probability `p` (as `prop::bool::weighted`).
fn chance(u: &mut Unstructured, p: f64) -> Result<bool> {
    Ok(f64::from(u.int_in_range(0..=999u32)?) < p * 1000.0)
}

fn offset_in_page(u: &mut Unstructured) -> Result<usize> {
    Ok(match weighted(u, &[6, 1, 1, 2])? {
        0 => 0,
        1 => PAGE - 1,
        2 => 1,
        _ => below(u, 0, PAGE)?,
    })
}

fn offset_in_granule(u: &mut Unstructured) -> Result<usize> {
    Ok(match weighted(u, &[4, 2, 1])? {
        0 => 0,
        1 => below(u, 0, 16)? * PAGE,
        _ => below(u, 0, GRANULE)?,
    })
}

fn loc(u: &mut Unstructured) -> Result<Loc> {
    Ok(match weighted(u, &[8, 4, 2])? {
        0 => Loc::Live {
            idx: below(u, 0, 8)?,
            page: below(u, 0, 80)?,
            byte: offset_in_page(u)?,
        },
        1 => Loc::Run {
            idx: below(u, 0, 8)?,
            run: below(u, 0, 8)?,
            byte: offset_in_page(u)?,
        },
        _ => Loc::Arena {
            slot: below(u, 0, ARENA_SLOTS)?,
            byte: offset_in_granule(u)?,
        },
    })
}

fn len(u: &mut Unstructured) -> Result<Len> {
    Ok(match weighted(u, &[6, 2, 1, 2, 3])? {
        0 => Len::Pages(below(u, 1, 17)?),
        1 => Len::Bytes(below(u, 1, 0x12000)?),
        2 => Len::Zero,
        3 => Len::ToEnd,
        _ => Len::RunEnd,
    })
}

fn reserve_len(u: &mut Unstructured) -> Result<Len> {
    Ok(match weighted(u, &[6, 2, 1, 1])? {
        0 => Len::Pages(below(u, 1, 65)?),
        1 => Len::Bytes(below(u, 1, 0x40000)?),
        2 => Len::Pages(below(u, 65, 1025)?),
        _ => Len::Zero,
    })
}

fn bit(u: &mut Unstructured, lo: u32, hi: u32) -> Result<u32> {
    Ok(1 << u.int_in_range(lo..=hi - 1)?)
}

fn raw_prot(u: &mut Unstructured) -> Result<u32> {
    Ok(match weighted(u, &[1; 9])? {
        0 => 0,
        1 => 0x08,
        2 => 0x80,
        3 => bit(u, 0, 8)? | bit(u, 0, 8)?,
        4 => 0x100 << u.int_in_range(0..=2u32)?,
        5 => bit(u, 0, 8)? | (0x100 << u.int_in_range(0..=2u32)?),
        6 => bit(u, 0, 8)? | 0x600,
        7 => bit(u, 0, 8)? | bit(u, 11, 32)?,
        _ => u.arbitrary()?,
    })
}

fn prot(u: &mut Unstructured) -> Result<Prot> {
    Ok(match weighted(u, &[8, 3, 1, 1])? {
        0 => Prot::Base(below(u, 0, BASES.len())?),
        1 => Prot::Inherit(below(u, 0, BASES.len())?),
        2 => Prot::Modified(below(u, 1, BASES.len())?, below(u, 0, MODIFIERS.len())?),
        _ => Prot::Raw(raw_prot(u)?),
    })
}

fn reserve_prot(u: &mut Unstructured) -> Result<Prot> {
    Ok(match weighted(u, &[8, 2, 1])? {
        0 => Prot::Base(below(u, 0, BASES.len())?),
        1 => Prot::Modified(below(u, 1, BASES.len())?, below(u, 0, MODIFIERS.len())?),
        _ => Prot::Raw(raw_prot(u)?),
    })
}

fn raw_alloc_type(u: &mut Unstructured) -> Result<u32> {
    Ok(match weighted(u, &[4, 1, 1])? {
        0 => {
            let mut ty = 0;
            for _ in 0..below(u, 0, 4)? {
                ty |= *u.choose(&ALLOCATION_TYPE_BITS)?;
            }
            ty
        }
        1 => bit(u, 0, 32)?,
        _ => u.arbitrary()?,
    })
}

fn raw_free_type(u: &mut Unstructured) -> Result<u32> {
    Ok(match weighted(u, &[3, 1, 1])? {
        0 => *u.choose(&FREE_TYPES)?,
        1 => bit(u, 0, 32)?,
        _ => u.arbitrary()?,
    })
}

fn foreign_call(u: &mut Unstructured) -> Result<ForeignCall> {
    let size = |u: &mut Unstructured| below(u, 1, 0x3000);
    Ok(match weighted(u, &[3, 1, 1, 1, 1, 1, 1, 1])? {
        0 => ForeignCall::Query,
        1 => ForeignCall::Reserve {
            size: size(u)?,
            commit: u.arbitrary()?,
        },
        2 => ForeignCall::Commit {
            size: size(u)?,
            base: below(u, 0, BASES.len())?,
        },
        3 => ForeignCall::Reset { size: size(u)? },
        4 => ForeignCall::ResetUndo { size: size(u)? },
        5 => ForeignCall::Decommit {
            size: if u.arbitrary()? { 0 } else { size(u)? },
        },
        6 => ForeignCall::Release,
        _ => ForeignCall::Protect {
            size: size(u)?,
            base: below(u, 0, BASES.len())?,
        },
    })
}

fn foreign_target(u: &mut Unstructured) -> Result<Foreign> {
    Ok(*u.choose(&[
        Foreign::Stack,
        Foreign::Heap,
        Foreign::Static,
        Foreign::Code,
        Foreign::GuardMap,
        Foreign::RwMap,
        Foreign::Null,
        Foreign::Kernel,
    ])?)
}

fn op(u: &mut Unstructured) -> Result<Op> {
    Ok(
        match weighted(u, &[4, 3, 6, 3, 3, 3, 2, 4, 2, 5, 2, 1, 1, 2, 3, 1])? {
            0 => Op::ReserveNull {
                len: reserve_len(u)?,
                commit: u.arbitrary()?,
                top_down: chance(u, 0.2)?,
                prot: reserve_prot(u)?,
            },
            1 => Op::ReserveFixed {
                loc: loc(u)?,
                len: reserve_len(u)?,
                commit: u.arbitrary()?,
                prot: reserve_prot(u)?,
            },
            2 => Op::Commit {
                loc: loc(u)?,
                len: len(u)?,
                prot: prot(u)?,
                top_down: chance(u, 0.1)?,
            },
            3 => Op::Reset {
                loc: loc(u)?,
                len: len(u)?,
                prot: prot(u)?,
            },
            4 => Op::ResetUndo {
                loc: loc(u)?,
                len: len(u)?,
            },
            5 => Op::Decommit {
                loc: loc(u)?,
                len: len(u)?,
            },
            6 => Op::Release {
                idx: below(u, 0, 8)?,
                offset: match weighted(u, &[6, 1, 1, 1])? {
                    0 => 0,
                    1 => 0xfff,
                    2 => 0x1001,
                    _ => below(u, 0, 0x20000)?,
                },
                size: match weighted(u, &[8, 1])? {
                    0 => 0,
                    _ => below(u, 1, 0x20000)?,
                },
            },
            7 => Op::Protect {
                loc: loc(u)?,
                len: len(u)?,
                prot: prot(u)?,
            },
            8 => Op::Query { loc: loc(u)? },
            9 => Op::Write {
                pick: below(u, 0, 64)?,
                sample: below(u, 0, SAMPLES)?,
                value: u.int_in_range(1..=255u8)?,
            },
            10 => Op::RawAlloc {
                loc: if chance(u, 0.7)? { Some(loc(u)?) } else { None },
                len: reserve_len(u)?,
                ty: raw_alloc_type(u)?,
                prot: raw_prot(u)?,
            },
            11 => Op::RawFree {
                loc: loc(u)?,
                len: len(u)?,
                ty: raw_free_type(u)?,
            },
            12 => Op::Foreign {
                target: foreign_target(u)?,
                call: foreign_call(u)?,
            },
            13 => Op::ReserveWatched {
                len: reserve_len(u)?,
                commit: u.arbitrary()?,
                prot: reserve_prot(u)?,
            },
            14 => Op::GetWriteWatch {
                loc: loc(u)?,
                len: len(u)?,
                max: below(u, 1, MAX_WATCH + 1)?,
                flags: match weighted(u, &[4, 4, 1])? {
                    0 => 0,
                    1 => 1,
                    _ => u.arbitrary()?,
                },
            },
            _ => Op::ResetWriteWatch {
                loc: loc(u)?,
                len: len(u)?,
            },
        },
    )
}
