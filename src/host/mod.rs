//! The host layer: `HostMemoryManager`, the only thing the faces call.
//!
//! It turns the engine's Win32 outcomes into HRESULTs, refuses memory the
//! host did not allocate (`HOST_E_INVALIDOPERATION`), latches catastrophic
//! failures (`E_FAIL`, then `HOST_E_CLRNOTAVAILABLE`), bounds its lock
//! (`HOST_E_TIMEOUT`, `HOST_E_ABANDONED`) and keeps statistics.
#![forbid(unsafe_code)]

mod config;
mod error;
mod hresult;
mod lifecycle;
mod manager;
mod stats;

pub use config::HostConfig;
pub use error::HostError;
pub use hresult::HResult;
pub use manager::{HostMemoryManager, MemoryCriticalLevel};
pub use stats::{Method, Statistics};
