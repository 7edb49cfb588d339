//! Synchronisation built for hostmem's access pattern: many queries and
//! ownership checks, fewer changes.

pub(crate) mod fork;
pub(crate) mod prim;
mod sharded_lock;

pub use sharded_lock::{LockError, ReadGuard, ShardedLock, WriteGuard, thread_slot};
