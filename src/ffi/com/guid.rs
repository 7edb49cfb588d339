//! `GUID` / `IID`: the 16-byte interface identifiers of COM, and the IIDs
//! of the interfaces hostmem implements or calls (values from mscoree.h).
#![forbid(unsafe_code)]

use std::fmt;

/// A COM `GUID` (also `IID`) in the layout of `guiddef.h`: 16 bytes,
/// `Data1` to `Data3` in the machine's byte order, `Data4` as written.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    /// `Data1`: the first 8 hex digits.
    pub data1: u32,
    /// `Data2`: the next 4.
    pub data2: u16,
    /// `Data3`: the next 4.
    pub data3: u16,
    /// `Data4`: the last 16 hex digits, byte by byte.
    pub data4: [u8; 8],
}

impl Guid {
    /// The GUID written `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}`, given as
    /// the number `0xXXXXXXXX_XXXX_XXXX_XXXX_XXXXXXXXXXXX`.
    pub const fn from_u128(value: u128) -> Self {
        Self {
            data1: (value >> 96) as u32,
            data2: (value >> 80) as u16,
            data3: (value >> 64) as u16,
            data4: (value as u64).to_be_bytes(),
        }
    }
}

impl fmt::Debug for Guid {
    /// The registry form: `{7BC698D1-F9E3-4460-9CDE-D04248E9FA25}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.data4;
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}}}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `IID_IUnknown` {00000000-0000-0000-C000-000000000046}.
pub const IID_IUNKNOWN: Guid = Guid::from_u128(0x00000000_0000_0000_C000_000000000046);
/// `IID_IHostMemoryManager` {7BC698D1-F9E3-4460-9CDE-D04248E9FA25}.
pub const IID_IHOST_MEMORY_MANAGER: Guid = Guid::from_u128(0x7BC698D1_F9E3_4460_9CDE_D04248E9FA25);
/// `IID_IHostMalloc` {1831991C-CC53-4A31-B218-04E910446479}.
pub const IID_IHOST_MALLOC: Guid = Guid::from_u128(0x1831991C_CC53_4A31_B218_04E910446479);
/// `IID_ICLRMemoryNotificationCallback` {47EB8E57-0846-4546-AF76-6F42FCFC2649}.
pub const IID_ICLR_MEMORY_NOTIFICATION_CALLBACK: Guid =
    Guid::from_u128(0x47EB8E57_0846_4546_AF76_6F42FCFC2649);
/// `IID_IHostMemoryWriteWatch` {128AD70B-3672-4455-9026-05C455ECE043}:
/// hostmem's extension of the manager object (write watching and large
/// pages), reached by `QueryInterface` on an `IHostMemoryManager`.
pub const IID_IHOST_MEMORY_WRITE_WATCH: Guid =
    Guid::from_u128(0x128AD70B_3672_4455_9026_05C455ECE043);
/// `IID_IHostControl` {02CA073C-7079-4860-880A-C2F7A449C991}.
pub const IID_IHOST_CONTROL: Guid = Guid::from_u128(0x02CA073C_7079_4860_880A_C2F7A449C991);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_text_form() {
        assert_eq!(std::mem::size_of::<Guid>(), 16);
        assert_eq!(
            IID_IHOST_MEMORY_MANAGER.to_string(),
            "{7BC698D1-F9E3-4460-9CDE-D04248E9FA25}"
        );
        assert_eq!(
            IID_IUNKNOWN.to_string(),
            "{00000000-0000-0000-C000-000000000046}"
        );
        assert_eq!(IID_IHOST_CONTROL.data1, 0x02CA_073C);
        assert_eq!(
            IID_IHOST_MALLOC.data4,
            [0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79]
        );
    }
}
