//! A backend for tests: the real kernel underneath, with chosen calls made
//! to fail and every call counted.
#![allow(unsafe_code)]

use super::{Access, KernelMapping, OsBackend, OsError, UnixBackend};
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The operations of [`OsBackend`], to name the one a fault is aimed at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OsOperation {
    /// `map_fixed`.
    MapFixed,
    /// `map_anywhere`.
    MapAnywhere,
    /// `unmap`.
    Unmap,
    /// `protect`.
    Protect,
    /// `discard`.
    Discard,
    /// `reset`.
    Reset,
    /// `keep_contents`.
    KeepContents,
    /// `mappings`.
    Mappings,
    /// `watch_writes`.
    WatchWrites,
    /// `written_pages`.
    WrittenPages,
    /// `map_huge`.
    MapHuge,
}

impl OsOperation {
    /// Every operation, in declaration order.
    pub const ALL: [OsOperation; 11] = [
        Self::MapFixed,
        Self::MapAnywhere,
        Self::Unmap,
        Self::Protect,
        Self::Discard,
        Self::Reset,
        Self::KeepContents,
        Self::Mappings,
        Self::WatchWrites,
        Self::WrittenPages,
        Self::MapHuge,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Which call to fail: the `nth` (0-based) call of `operation` from now,
/// with `error`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FaultPlan {
    /// The operation to fail.
    pub operation: OsOperation,
    /// How many calls of it succeed first.
    pub nth: u64,
    /// The errno it fails with.
    pub error: OsError,
}

#[derive(Default)]
struct State {
    calls: [u64; OsOperation::ALL.len()],
    faults: Vec<FaultPlan>,
    injected: u64,
}

/// Calls made to wait for one another (see
/// [`FaultInjectingBackend::rendezvous`]).
#[derive(Default)]
struct Rendezvous {
    operation: Option<OsOperation>,
    parties: usize,
    arrived: usize,
    timeout: Duration,
    met: bool,
}

/// The real unix backend with fault injection, call counting and
/// rendezvous of concurrent calls.
#[derive(Default)]
pub struct FaultInjectingBackend {
    inner: UnixBackend,
    state: Mutex<State>,
    meeting: Mutex<Rendezvous>,
    meeting_changed: Condvar,
}

impl FaultInjectingBackend {
    /// A backend that fails nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a future call fail (see [`FaultPlan`]).
    pub fn inject(&self, plan: FaultPlan) {
        self.state.lock().faults.push(plan);
    }

    /// Forgets every fault not yet injected.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many calls of `operation` were made (failed ones included).
    pub fn calls(&self, operation: OsOperation) -> u64 {
        self.state.lock().calls[operation.index()]
    }

    /// How many calls of any operation were made.
    pub fn total_calls(&self) -> u64 {
        self.state.lock().calls.iter().sum()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// Makes the next `parties` calls of `operation` wait, before they go
    /// to the kernel, until all of them are waiting at once, or until
    /// `timeout` has passed for each; [`rendezvous_met`](Self::rendezvous_met)
    /// then tells which. A test of concurrency uses it to show that calls
    /// really are inside the backend at the same moment: calls made one
    /// after another never meet.
    pub fn rendezvous(&self, operation: OsOperation, parties: usize, timeout: Duration) {
        *self.meeting.lock() = Rendezvous {
            operation: Some(operation),
            parties,
            arrived: 0,
            timeout,
            met: false,
        };
    }

    /// How many calls have arrived at the last
    /// [`rendezvous`](Self::rendezvous) (those still waiting, until all
    /// have come).
    pub fn rendezvous_arrived(&self) -> usize {
        self.meeting.lock().arrived
    }

    /// Whether the calls of the last [`rendezvous`](Self::rendezvous) all
    /// waited at once.
    pub fn rendezvous_met(&self) -> bool {
        self.meeting.lock().met
    }

    fn meet(&self, operation: OsOperation) {
        let mut meeting = self.meeting.lock();
        if meeting.operation != Some(operation) || meeting.arrived >= meeting.parties {
            return;
        }
        meeting.arrived += 1;
        if meeting.arrived == meeting.parties {
            meeting.met = true;
            self.meeting_changed.notify_all();
            return;
        }
        let deadline = Instant::now() + meeting.timeout;
        while !meeting.met {
            if self
                .meeting_changed
                .wait_until(&mut meeting, deadline)
                .timed_out()
            {
                break;
            }
        }
    }

    fn enter(&self, operation: OsOperation) -> Result<(), OsError> {
        self.meet(operation);
        let mut state = self.state.lock();
        state.calls[operation.index()] += 1;
        let mut fault = None;
        for (i, plan) in state.faults.iter_mut().enumerate() {
            if plan.operation == operation {
                if plan.nth == 0 {
                    fault = Some((i, plan.error));
                    break;
                }
                plan.nth -= 1;
            }
        }
        match fault {
            Some((i, error)) => {
                state.faults.remove(i);
                state.injected += 1;
                Err(error)
            }
            None => Ok(()),
        }
    }
}

impl OsBackend for FaultInjectingBackend {
    fn map_fixed(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        self.enter(OsOperation::MapFixed)?;
        self.inner.map_fixed(addr, len, access)
    }

    fn map_anywhere(&self, hint: usize, len: usize, access: Access) -> Result<usize, OsError> {
        self.enter(OsOperation::MapAnywhere)?;
        self.inner.map_anywhere(hint, len, access)
    }

    // SAFETY (the five raw-memory methods): the caller's contract, passed
    // on unchanged to the unix backend underneath, which made the mappings.

    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<(), OsError> {
        self.enter(OsOperation::Unmap)?;
        unsafe { self.inner.unmap(addr, len) }
    }

    unsafe fn protect(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        self.enter(OsOperation::Protect)?;
        unsafe { self.inner.protect(addr, len, access) }
    }

    unsafe fn discard(&self, addr: usize, len: usize) -> Result<(), OsError> {
        self.enter(OsOperation::Discard)?;
        unsafe { self.inner.discard(addr, len) }
    }

    unsafe fn reset(&self, addr: usize, len: usize) -> Result<(), OsError> {
        self.enter(OsOperation::Reset)?;
        unsafe { self.inner.reset(addr, len) }
    }

    unsafe fn keep_contents(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        self.enter(OsOperation::KeepContents)?;
        unsafe { self.inner.keep_contents(addr, len, access) }
    }

    fn mappings(&self) -> Result<Vec<KernelMapping>, OsError> {
        self.enter(OsOperation::Mappings)?;
        self.inner.mappings()
    }

    unsafe fn watch_writes(&self, addr: usize, len: usize) -> Result<(), OsError> {
        self.enter(OsOperation::WatchWrites)?;
        // SAFETY: the caller's contract, passed on.
        unsafe { self.inner.watch_writes(addr, len) }
    }

    unsafe fn written_pages(
        &self,
        addr: usize,
        len: usize,
        max_pages: usize,
        protect: bool,
        out: Option<&mut Vec<usize>>,
    ) -> Result<(), OsError> {
        self.enter(OsOperation::WrittenPages)?;
        // SAFETY: the caller's contract, passed on.
        unsafe { self.inner.written_pages(addr, len, max_pages, protect, out) }
    }

    fn map_huge(&self, addr: usize, len: usize, access: Access) -> Result<usize, OsError> {
        self.enter(OsOperation::MapHuge)?;
        self.inner.map_huge(addr, len, access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_exactly_the_planned_call() {
        let os = FaultInjectingBackend::new();
        os.inject(FaultPlan {
            operation: OsOperation::MapAnywhere,
            nth: 1,
            error: OsError::ENOMEM,
        });
        let a = os.map_anywhere(0, 0x1000, Access::empty()).unwrap();
        assert_eq!(
            os.map_anywhere(0, 0x1000, Access::empty()),
            Err(OsError::ENOMEM)
        );
        let b = os.map_anywhere(0, 0x1000, Access::empty()).unwrap();
        // SAFETY: both mappings were made just above and are used by
        // nothing.
        unsafe {
            os.unmap(a, 0x1000).unwrap();
            os.unmap(b, 0x1000).unwrap();
        }
        assert_eq!(os.calls(OsOperation::MapAnywhere), 3);
        assert_eq!(os.calls(OsOperation::Unmap), 2);
        assert_eq!(os.injected(), 1);
    }
}
