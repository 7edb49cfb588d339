//! Embedding hostmem in a Rust program: a manager with a budget, a
//! reservation committed in steps, a query, a protection change, a heap,
//! a refusal by the budget, and the release.
//!
//! Run it with `cargo run --example embed`.

use hostmem::{
    AllocationType, FreeType, HostConfig, HostError, HostMemoryManager, MallocType,
    MemoryCriticalLevel, MemoryState, Protection,
};

const MIB: usize = 1 << 20;

pub fn main() -> Result<(), HostError> {
    // A manager that lets its users commit 16 MiB; everything else default.
    let config = HostConfig {
        budget_bytes: Some(16 << 20),
        ..HostConfig::default()
    };
    // `new` checks the configuration and hands the manager out in an `Arc`,
    // ready to share between threads and to create heaps.
    let manager = HostMemoryManager::new(config).expect("a valid configuration");
    let task = MemoryCriticalLevel::TaskCritical;

    // Reserve 64 MiB of address space, then commit the first 4 MiB in steps.
    let base = manager.virtual_alloc(
        0,
        64 * MIB,
        AllocationType::RESERVE,
        Protection::NOACCESS,
        task,
    )?;
    println!("reserved 64 MiB at {base:#x}");
    for step in 0..4 {
        manager.virtual_alloc(
            base + step * MIB,
            MIB,
            AllocationType::COMMIT,
            Protection::READWRITE,
            task,
        )?;
    }
    let info = manager.virtual_query(base)?;
    assert_eq!(info.state, MemoryState::COMMIT);
    println!(
        "committed {} MiB, {:?}",
        info.region_size / MIB,
        info.protect
    );

    // Make the first MiB read-only; the call answers the old protection.
    let old = manager.virtual_protect(base, MIB, Protection::READONLY)?;
    println!("first MiB read-only (was {old:?})");

    // A heap whose pages come from this manager and count in its budget.
    let heap = manager.create_malloc(MallocType::THREADSAFE)?;
    let block = heap.alloc(100, task)?;
    println!("heap block of 100 bytes at {block:#x}");
    heap.free(block)?;

    // 12 MiB more would take the load past what a task-critical request
    // may use (90 % of the budget): refused, and nothing changes.
    let refused = manager.virtual_alloc(
        base + 4 * MIB,
        12 * MIB,
        AllocationType::COMMIT,
        Protection::READWRITE,
        task,
    );
    assert_eq!(refused, Err(HostError::OverBudget));
    println!("12 MiB more at TaskCritical: {}", refused.unwrap_err());

    // Memory the manager did not allocate is never touched.
    let on_the_stack = 0u64;
    let foreign = manager.virtual_free(
        std::ptr::addr_of!(on_the_stack) as usize,
        0,
        FreeType::RELEASE,
    );
    assert_eq!(foreign, Err(HostError::NotHostMemory));
    println!("freeing a stack address: {}", foreign.unwrap_err());

    manager.virtual_free(base, 0, FreeType::RELEASE)?;
    let load = manager.get_memory_load()?;
    println!(
        "released; {} of {} bytes committed (the heap's pages)",
        load.used_bytes, load.total_bytes
    );
    Ok(())
}
