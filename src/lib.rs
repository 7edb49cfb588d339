//! hostmem: a host memory manager.
//!
//! The Win32 semantics of `VirtualAlloc`, `VirtualFree`, `VirtualQuery` and
//! `VirtualProtect`, emulated exactly on Linux, under the CLR hosting
//! contract `IHostMemoryManager`. The layers, from the bottom:
//!
//! - [`os`]: the kernel primitives behind a small trait (the unix backend
//!   over rustix, and a fault-injecting one for tests);
//! - [`engine`]: the address space with Win32's rules and error codes;
//! - [`win32`]: the vocabulary (flags, errors, `MEMORY_BASIC_INFORMATION`);
//! - [`host`]: `HostMemoryManager`, the hosting contract (HRESULTs,
//!   ownership, lifecycle, statistics), over [`sync`]'s sharded lock;
//! - [`heap`]: the `IHostMalloc` heaps a manager creates, drawn from its
//!   own pages;
//! - [`ffi`]: the C faces (the flat Win32-style API);
//! - [`bench`](mod@bench): `hostmem bench`, the performance figures of
//!   issue 7, each against the raw syscalls doing the same work;
//! - [`trace`]: recording every call a manager takes (`HOSTMEM_TRACE`)
//!   and replaying a recording against a fresh manager.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod engine;
pub mod ffi;
pub mod heap;
pub mod host;
pub mod os;
pub mod sync;
pub mod trace;
pub mod win32;
