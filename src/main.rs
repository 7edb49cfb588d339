//! `hostmem`: a short demonstration through the engine that prints the
//! region map (the full command line comes with the CLI).

use hostmem::engine::AddressSpace;
use hostmem::win32::{AllocationType, FreeType, Protection};

fn main() {
    if let Err(page) = hostmem::os::check_page_size() {
        eprintln!(
            "hostmem: the kernel's page size ({page} bytes) does not divide the 4 KiB Win32 page"
        );
        std::process::exit(1);
    }
    let mut space = AddressSpace::new();
    let base = space
        .virtual_alloc(0, 0x100000, AllocationType::RESERVE, Protection::READWRITE)
        .expect("reserve");
    space
        .virtual_alloc(base, 0x4000, AllocationType::COMMIT, Protection::READWRITE)
        .expect("commit");
    space
        .virtual_protect(base + 0x2000, 0x1000, Protection::READONLY)
        .expect("protect");
    space
        .virtual_free(base + 0x1000, 0x1000, FreeType::DECOMMIT)
        .expect("decommit");
    let mut at = base;
    while at < base + 0x100000 {
        let mbi = space.virtual_query(at).expect("query");
        println!(
            "{:#014x} {:>8x} {:?} {:?}",
            mbi.base_address, mbi.region_size, mbi.state, mbi.protect
        );
        at += mbi.region_size;
    }
}
