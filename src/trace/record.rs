//! One line of a trace: a call to a manager, its arguments with addresses
//! written relative to the regions the trace named, and its result.
//!
//! ```text
//! 12 0.004512 t2 m1 VirtualAlloc addr=r3+0x10000 size=0x40000 type=MEM_COMMIT protect=PAGE_READWRITE level=eTaskCritical => S_OK r3+0x10000
//! ```
//!
//! Fields: the sequence number (the order in which the manager took the
//! calls, whatever order the lines were written in), the time in seconds
//! since the trace began, the thread, the manager, the method, its
//! arguments, `=>` and the result. `r3` is the third reservation the trace
//! saw its manager make, `a2` the second range the runtime reported as
//! acquired; other addresses are written as they were.

use super::names::{available_name, flags_to_string, hresult_to_string, level_name};
use crate::host::{HResult, MemoryAvailable, MemoryCriticalLevel};
use crate::win32::{
    AllocationType, FreeType, MemoryBasicInformation, MemoryState, MemoryType, Protection,
};
use std::fmt;

/// The first line of every trace.
pub const TRACE_HEADER: &str = "hostmem-trace 1";

/// A region a trace named.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Sym {
    /// `rN`: the Nth reservation the manager made (from 1).
    Reservation(u32),
    /// `aN`: the Nth range the runtime reported with
    /// `AcquiredVirtualAddressSpace` (from 1).
    Acquired(u32),
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reservation(n) => write!(f, "r{n}"),
            Self::Acquired(n) => write!(f, "a{n}"),
        }
    }
}

/// An address as a trace writes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Addr {
    /// An address outside every named region (NULL is `0`).
    Abs(usize),
    /// An offset into a named region: `r3+0x1000`, or `r3` for its base.
    Rel(Sym, usize),
}

impl Addr {
    /// The region named, if any.
    pub fn sym(self) -> Option<Sym> {
        match self {
            Self::Abs(_) => None,
            Self::Rel(sym, _) => Some(sym),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Abs(0) => f.write_str("0"),
            Self::Abs(a) => write!(f, "{a:#x}"),
            Self::Rel(sym, 0) => write!(f, "{sym}"),
            Self::Rel(sym, off) => write!(f, "{sym}+{off:#x}"),
        }
    }
}

/// The configuration a manager was created with, as far as it decides
/// results.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ManagerSettings {
    /// The budget in bytes; `None`: none (loads come from the machine).
    pub budget: Option<u64>,
    /// The low-memory threshold, percent.
    pub low_percent: u32,
    /// The high-memory threshold, percent.
    pub high_percent: u32,
    /// The limit of each critical level, percent of the budget.
    pub level_percent: [u32; 3],
}

/// A traced call, with addresses of type `A`: `usize` as the manager saw
/// them, [`Addr`] as the trace writes them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Call<A> {
    /// A manager was created.
    CreateManager(ManagerSettings),
    /// `VirtualAlloc`; `heap`: a page call of an `IHostMalloc` heap.
    VirtualAlloc {
        /// Made by a heap rather than through the hosting interface.
        heap: bool,
        /// `lpAddress`.
        address: A,
        /// `dwSize`.
        size: usize,
        /// `flAllocationType`.
        allocation_type: AllocationType,
        /// `flProtect`.
        protect: Protection,
        /// `eCriticalLevel`.
        level: MemoryCriticalLevel,
    },
    /// `VirtualFree`; `heap`: a page call of an `IHostMalloc` heap.
    VirtualFree {
        /// Made by a heap rather than through the hosting interface.
        heap: bool,
        /// `lpAddress`.
        address: A,
        /// `dwSize`.
        size: usize,
        /// `dwFreeType`.
        free_type: FreeType,
    },
    /// `VirtualQuery`.
    VirtualQuery {
        /// `lpAddress`.
        address: A,
    },
    /// `VirtualProtect`.
    VirtualProtect {
        /// `lpAddress`.
        address: A,
        /// `dwSize`.
        size: usize,
        /// `flNewProtect`.
        protect: Protection,
    },
    /// `GetMemoryLoad`.
    GetMemoryLoad,
    /// `RegisterMemoryNotificationCallback`: with a callback or none.
    RegisterMemoryNotificationCallback {
        /// Whether a callback was registered (rather than removed).
        set: bool,
    },
    /// `NeedsVirtualAddressSpace`.
    NeedsVirtualAddressSpace {
        /// `startAddress`.
        address: A,
        /// `size`.
        size: usize,
    },
    /// `AcquiredVirtualAddressSpace`.
    AcquiredVirtualAddressSpace {
        /// `startAddress`.
        address: A,
        /// `size`.
        size: usize,
    },
    /// `ReleasedVirtualAddressSpace`.
    ReleasedVirtualAddressSpace {
        /// `startAddress`.
        address: A,
    },
    /// The manager was shut down.
    Shutdown,
    /// Not a call but an event: the manager told the runtime's callback
    /// the memory state.
    OnMemoryNotification {
        /// The state delivered.
        state: MemoryAvailable,
    },
}

impl<A: Copy> Call<A> {
    /// The same call with every address mapped through `f`, or the first
    /// error `f` returns.
    pub fn try_map<B, E>(self, mut f: impl FnMut(A) -> Result<B, E>) -> Result<Call<B>, E> {
        Ok(match self {
            Self::CreateManager(s) => Call::CreateManager(s),
            Self::VirtualAlloc {
                heap,
                address,
                size,
                allocation_type,
                protect,
                level,
            } => Call::VirtualAlloc {
                heap,
                address: f(address)?,
                size,
                allocation_type,
                protect,
                level,
            },
            Self::VirtualFree {
                heap,
                address,
                size,
                free_type,
            } => Call::VirtualFree {
                heap,
                address: f(address)?,
                size,
                free_type,
            },
            Self::VirtualQuery { address } => Call::VirtualQuery {
                address: f(address)?,
            },
            Self::VirtualProtect {
                address,
                size,
                protect,
            } => Call::VirtualProtect {
                address: f(address)?,
                size,
                protect,
            },
            Self::GetMemoryLoad => Call::GetMemoryLoad,
            Self::RegisterMemoryNotificationCallback { set } => {
                Call::RegisterMemoryNotificationCallback { set }
            }
            Self::NeedsVirtualAddressSpace { address, size } => Call::NeedsVirtualAddressSpace {
                address: f(address)?,
                size,
            },
            Self::AcquiredVirtualAddressSpace { address, size } => {
                Call::AcquiredVirtualAddressSpace {
                    address: f(address)?,
                    size,
                }
            }
            Self::ReleasedVirtualAddressSpace { address } => Call::ReleasedVirtualAddressSpace {
                address: f(address)?,
            },
            Self::Shutdown => Call::Shutdown,
            Self::OnMemoryNotification { state } => Call::OnMemoryNotification { state },
        })
    }

    /// The same call with every address mapped through `f`.
    pub fn map<B>(self, mut f: impl FnMut(A) -> B) -> Call<B> {
        match self.try_map(|a| Ok::<B, std::convert::Infallible>(f(a))) {
            Ok(call) => call,
        }
    }

    /// The method's name in a trace.
    pub fn method(&self) -> &'static str {
        match self {
            Self::CreateManager(_) => "CreateManager",
            Self::VirtualAlloc { heap: false, .. } => "VirtualAlloc",
            Self::VirtualAlloc { heap: true, .. } => "Heap.VirtualAlloc",
            Self::VirtualFree { heap: false, .. } => "VirtualFree",
            Self::VirtualFree { heap: true, .. } => "Heap.VirtualFree",
            Self::VirtualQuery { .. } => "VirtualQuery",
            Self::VirtualProtect { .. } => "VirtualProtect",
            Self::GetMemoryLoad => "GetMemoryLoad",
            Self::RegisterMemoryNotificationCallback { .. } => "RegisterMemoryNotificationCallback",
            Self::NeedsVirtualAddressSpace { .. } => "NeedsVirtualAddressSpace",
            Self::AcquiredVirtualAddressSpace { .. } => "AcquiredVirtualAddressSpace",
            Self::ReleasedVirtualAddressSpace { .. } => "ReleasedVirtualAddressSpace",
            Self::Shutdown => "Shutdown",
            Self::OnMemoryNotification { .. } => "OnMemoryNotification",
        }
    }

    /// Whether the line is an event (no call, no result).
    pub fn is_event(&self) -> bool {
        matches!(self, Self::OnMemoryNotification { .. })
    }
}

/// What `VirtualQuery` answered, with addresses of type `A`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct QueryAnswer<A> {
    /// `BaseAddress`.
    pub base: A,
    /// `AllocationBase`.
    pub allocation_base: A,
    /// `AllocationProtect`.
    pub allocation_protect: Protection,
    /// `RegionSize`.
    pub size: usize,
    /// `State`.
    pub state: MemoryState,
    /// `Protect`.
    pub protect: Protection,
    /// `Type`.
    pub type_: MemoryType,
}

impl From<MemoryBasicInformation> for QueryAnswer<usize> {
    fn from(m: MemoryBasicInformation) -> Self {
        Self {
            base: m.base_address,
            allocation_base: m.allocation_base,
            allocation_protect: m.allocation_protect,
            size: m.region_size,
            state: m.state,
            protect: m.protect,
            type_: m.type_,
        }
    }
}

/// The result of a traced call, with addresses of type `A`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome<A> {
    /// A failure HRESULT.
    Failed(HResult),
    /// `S_OK` with nothing more to say.
    Ok,
    /// `S_OK` and an address (`VirtualAlloc`'s).
    Address(A),
    /// `S_OK` and the name the trace gave the reported range
    /// (`AcquiredVirtualAddressSpace`).
    Named(Sym),
    /// `S_OK` and `VirtualQuery`'s answer.
    Query(QueryAnswer<A>),
    /// `S_OK` and `VirtualProtect`'s old protection.
    OldProtect(Protection),
    /// `S_OK` and `GetMemoryLoad`'s figures.
    Load {
        /// Bytes in use.
        used: u64,
        /// Bytes in all.
        total: u64,
    },
    /// An event's line has no result.
    Event,
}

impl<A: Copy> Outcome<A> {
    /// The same outcome with every address mapped through `f`.
    pub fn map<B>(self, mut f: impl FnMut(A) -> B) -> Outcome<B> {
        match self {
            Self::Failed(hr) => Outcome::Failed(hr),
            Self::Ok => Outcome::Ok,
            Self::Address(a) => Outcome::Address(f(a)),
            Self::Named(s) => Outcome::Named(s),
            Self::Query(q) => Outcome::Query(QueryAnswer {
                base: f(q.base),
                allocation_base: f(q.allocation_base),
                allocation_protect: q.allocation_protect,
                size: q.size,
                state: q.state,
                protect: q.protect,
                type_: q.type_,
            }),
            Self::OldProtect(p) => Outcome::OldProtect(p),
            Self::Load { used, total } => Outcome::Load { used, total },
            Self::Event => Outcome::Event,
        }
    }

    /// The HRESULT.
    pub fn hresult(&self) -> HResult {
        match self {
            Self::Failed(hr) => *hr,
            _ => HResult::S_OK,
        }
    }
}

impl fmt::Display for Outcome<Addr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(hr) => f.write_str(&hresult_to_string(*hr)),
            Self::Ok => f.write_str("S_OK"),
            Self::Address(a) => write!(f, "S_OK {a}"),
            Self::Named(s) => write!(f, "S_OK {s}"),
            Self::Query(q) => write!(
                f,
                "S_OK base={} alloc={} alloc_protect={} size={:#x} state={} protect={} type={}",
                q.base,
                q.allocation_base,
                flags_to_string(q.allocation_protect, "PAGE_"),
                q.size,
                flags_to_string(q.state, "MEM_"),
                flags_to_string(q.protect, "PAGE_"),
                flags_to_string(q.type_, "MEM_"),
            ),
            Self::OldProtect(p) => write!(f, "S_OK old={}", flags_to_string(*p, "PAGE_")),
            Self::Load { used, total } => write!(f, "S_OK used={used:#x} total={total:#x}"),
            Self::Event => Ok(()),
        }
    }
}

impl fmt::Display for Call<Addr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())?;
        match self {
            Self::CreateManager(s) => {
                match s.budget {
                    Some(b) => write!(f, " budget={b:#x}")?,
                    None => f.write_str(" budget=none")?,
                }
                let [t, a, p] = s.level_percent;
                write!(
                    f,
                    " low={} high={} levels={t},{a},{p}",
                    s.low_percent, s.high_percent
                )
            }
            Self::VirtualAlloc {
                address,
                size,
                allocation_type,
                protect,
                level,
                ..
            } => write!(
                f,
                " addr={address} size={size:#x} type={} protect={} level={}",
                flags_to_string(*allocation_type, "MEM_"),
                flags_to_string(*protect, "PAGE_"),
                level_name(*level)
            ),
            Self::VirtualFree {
                address,
                size,
                free_type,
                ..
            } => write!(
                f,
                " addr={address} size={size:#x} type={}",
                flags_to_string(*free_type, "MEM_")
            ),
            Self::VirtualQuery { address } | Self::ReleasedVirtualAddressSpace { address } => {
                write!(f, " addr={address}")
            }
            Self::VirtualProtect {
                address,
                size,
                protect,
            } => write!(
                f,
                " addr={address} size={size:#x} protect={}",
                flags_to_string(*protect, "PAGE_")
            ),
            Self::GetMemoryLoad | Self::Shutdown => Ok(()),
            Self::RegisterMemoryNotificationCallback { set } => {
                write!(f, " callback={}", if *set { "set" } else { "none" })
            }
            Self::NeedsVirtualAddressSpace { address, size }
            | Self::AcquiredVirtualAddressSpace { address, size } => {
                write!(f, " addr={address} size={size:#x}")
            }
            Self::OnMemoryNotification { state } => {
                write!(f, " state={}", available_name(*state))
            }
        }
    }
}

/// One line of a trace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Record {
    /// The order in which the manager took the call.
    pub seq: u64,
    /// Microseconds since the trace began, when the call began.
    pub time_us: u64,
    /// The calling thread (from 1).
    pub thread: u32,
    /// The manager called (from 1).
    pub manager: u32,
    /// The call.
    pub call: Call<Addr>,
    /// Its result.
    pub outcome: Outcome<Addr>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{:06} t{} m{} {}",
            self.seq,
            self.time_us / 1_000_000,
            self.time_us % 1_000_000,
            self.thread,
            self.manager,
            self.call
        )?;
        if self.call.is_event() {
            Ok(())
        } else {
            write!(f, " => {}", self.outcome)
        }
    }
}
