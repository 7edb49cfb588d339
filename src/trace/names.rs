//! The words a trace uses for numbers that have Win32 or CLR names:
//! flags (`MEM_COMMIT|MEM_RESERVE`), protections (`PAGE_READWRITE`),
//! HRESULTs (`E_OUTOFMEMORY`, `HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)`),
//! critical levels and memory states — written and read back losslessly
//! (bits without a name are written in hex).

use crate::host::{HResult, MemoryAvailable, MemoryCriticalLevel};
use crate::win32::Win32Error;
use bitflags::Flags;

/// Writes `flags` as `PREFIX_NAME|PREFIX_NAME|0xunknown`, or `0` if empty.
pub fn flags_to_string<F: Flags<Bits = u32>>(flags: F, prefix: &str) -> String {
    let mut parts: Vec<String> = flags
        .iter_names()
        .map(|(name, _)| format!("{prefix}{name}"))
        .collect();
    let unknown = flags.bits() & !F::all().bits();
    if unknown != 0 {
        parts.push(format!("{unknown:#x}"));
    }
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join("|")
    }
}

/// Reads what [`flags_to_string`] writes (numbers may be decimal or hex).
pub fn flags_from_str<F: Flags<Bits = u32>>(text: &str, prefix: &str) -> Option<F> {
    let mut bits = 0u32;
    for part in text.split('|') {
        bits |= match part.strip_prefix(prefix) {
            Some(name) => F::from_name(name)?.bits(),
            None => u32::try_from(parse_number(part)?).ok()?,
        };
    }
    Some(F::from_bits_retain(bits))
}

/// A number in decimal or `0x` hex.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

/// The Win32 errors hostmem produces, for names in both directions.
const WIN32_ERRORS: [Win32Error; 9] = [
    Win32Error::SUCCESS,
    Win32Error::NOT_ENOUGH_MEMORY,
    Win32Error::OUTOFMEMORY,
    Win32Error::BAD_LENGTH,
    Win32Error::INVALID_PARAMETER,
    Win32Error::INVALID_ADDRESS,
    Win32Error::NOACCESS,
    Win32Error::INTERNAL_ERROR,
    Win32Error::COMMITMENT_LIMIT,
];

/// The HRESULTs hostmem produces that have names of their own.
const HRESULTS: [HResult; 15] = [
    HResult::S_OK,
    HResult::E_FAIL,
    HResult::E_NOTIMPL,
    HResult::E_NOINTERFACE,
    HResult::E_POINTER,
    HResult::E_OUTOFMEMORY,
    HResult::E_INVALIDARG,
    HResult::HOST_E_DEADLOCK,
    HResult::HOST_E_INTERRUPTED,
    HResult::HOST_E_INVALIDOPERATION,
    HResult::HOST_E_CLRNOTAVAILABLE,
    HResult::HOST_E_TIMEOUT,
    HResult::HOST_E_NOT_OWNER,
    HResult::HOST_E_ABANDONED,
    HResult::HOST_E_EXITPROCESS_THREADABORT,
];

/// An HRESULT's name: its own (`E_OUTOFMEMORY`), the Win32 error it wraps
/// (`HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)`), or its bits in hex.
pub fn hresult_to_string(hr: HResult) -> String {
    if let Some(name) = hr.name() {
        return name.to_owned();
    }
    // 0x80070000 is not HRESULT_FROM_WIN32 of anything: the macro maps
    // ERROR_SUCCESS to S_OK, so that name would read back as a success.
    if hr.bits() & 0xFFFF_0000 == 0x8007_0000
        && hr.bits() & 0xFFFF != 0
        && let Some(name) = Win32Error(hr.bits() & 0xFFFF).name()
    {
        return format!("HRESULT_FROM_WIN32({name})");
    }
    format!("{:#010x}", hr.bits())
}

/// Reads what [`hresult_to_string`] writes.
pub fn hresult_from_str(text: &str) -> Option<HResult> {
    if let Some(hr) = HRESULTS.iter().find(|hr| hr.name() == Some(text)) {
        return Some(*hr);
    }
    if let Some(inner) = text
        .strip_prefix("HRESULT_FROM_WIN32(")
        .and_then(|t| t.strip_suffix(')'))
    {
        let e = WIN32_ERRORS
            .iter()
            .find(|e| e.name() == Some(inner))
            .copied()
            .or_else(|| parse_number(inner).and_then(|n| u32::try_from(n).ok().map(Win32Error)))?;
        return Some(HResult::from_win32(e));
    }
    if text.starts_with("0x") {
        return Some(HResult(u32::try_from(parse_number(text)?).ok()? as i32));
    }
    None
}

/// The CLR's name of a critical level (`eTaskCritical`, …).
pub fn level_name(level: MemoryCriticalLevel) -> &'static str {
    match level {
        MemoryCriticalLevel::TaskCritical => "eTaskCritical",
        MemoryCriticalLevel::AppDomainCritical => "eAppDomainCritical",
        MemoryCriticalLevel::ProcessCritical => "eProcessCritical",
    }
}

/// Reads [`level_name`]'s names.
pub fn level_from_str(text: &str) -> Option<MemoryCriticalLevel> {
    (0..3)
        .filter_map(MemoryCriticalLevel::from_raw)
        .find(|&l| level_name(l) == text)
}

/// The CLR's name of a memory state (`eMemoryAvailableLow`, …).
pub fn available_name(state: MemoryAvailable) -> &'static str {
    match state {
        MemoryAvailable::Low => "eMemoryAvailableLow",
        MemoryAvailable::Neutral => "eMemoryAvailableNeutral",
        MemoryAvailable::High => "eMemoryAvailableHigh",
    }
}

/// Reads [`available_name`]'s names.
pub fn available_from_str(text: &str) -> Option<MemoryAvailable> {
    [
        MemoryAvailable::Low,
        MemoryAvailable::Neutral,
        MemoryAvailable::High,
    ]
    .into_iter()
    .find(|&s| available_name(s) == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::win32::{AllocationType, Protection};

    #[test]
    fn flags_round_trip_with_unknown_bits() {
        let t = AllocationType::COMMIT | AllocationType::RESERVE;
        assert_eq!(flags_to_string(t, "MEM_"), "MEM_COMMIT|MEM_RESERVE");
        let odd = Protection::from_bits_retain(0x1004);
        let text = flags_to_string(odd, "PAGE_");
        assert_eq!(text, "PAGE_READWRITE|0x1000");
        assert_eq!(flags_from_str::<Protection>(&text, "PAGE_"), Some(odd));
        assert_eq!(flags_to_string(Protection::empty(), "PAGE_"), "0");
        assert_eq!(
            flags_from_str::<Protection>("0", "PAGE_"),
            Some(Protection::empty())
        );
        assert_eq!(flags_from_str::<Protection>("PAGE_BOGUS", "PAGE_"), None);
    }

    #[test]
    fn hresults_round_trip() {
        for hr in [
            HResult::S_OK,
            HResult::E_OUTOFMEMORY,
            HResult::from_win32(Win32Error::INVALID_ADDRESS),
            HResult(0x8000_ffffu32 as i32),
            // Found by the trace_parser fuzz target's round-trip check:
            HResult::E_NOTIMPL,
            HResult(0x8007_0000u32 as i32),
        ] {
            assert_eq!(hresult_from_str(&hresult_to_string(hr)), Some(hr));
        }
        assert_eq!(
            hresult_to_string(HResult::from_win32(Win32Error::INVALID_ADDRESS)),
            "HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)"
        );
        assert_eq!(hresult_from_str("E_NOPE"), None);
    }
}
