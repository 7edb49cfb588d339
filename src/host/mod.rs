//! The host layer: `HostMemoryManager`, the only thing the faces call.
//!
//! It turns the engine's Win32 outcomes into HRESULTs, refuses memory the
//! host did not allocate (`HOST_E_INVALIDOPERATION`), latches catastrophic
//! failures (`E_FAIL`, then `HOST_E_CLRNOTAVAILABLE`), bounds its lock
//! (`HOST_E_TIMEOUT`, `HOST_E_ABANDONED`) and keeps statistics.
#![forbid(unsafe_code)]

mod budget;
mod config;
mod error;
mod hresult;
mod lifecycle;
mod load;
mod manager;
mod notify;
mod stats;

pub use budget::MemoryBudget;
pub use config::{ConfigError, HostConfig};
pub use error::HostError;
pub use hresult::HResult;
pub(crate) use lifecycle::StopWatcher;
pub use load::{MachineMemory, MemoryLoad};
pub use manager::{HostMemoryManager, MemoryCriticalLevel};
pub(crate) use notify::after_fork_in_child;
pub use notify::{MemoryAvailable, MemoryNotificationCallback};
pub use stats::{Method, Statistics};
