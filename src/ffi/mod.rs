//! The C faces of hostmem: thin wrappers that add no semantics.
