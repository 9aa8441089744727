//! The `kos` command; all wiring lives in the `kos` library so tests reuse it.

// A node allocates and frees many small buffers (entries, keys, gossip frames) across threads; mimalloc does that
// with less work than the system allocator (BENCHMARKS.md, ledger), and RocksDB's C++ allocates through it too
// (mimalloc's `override`), so a home's heap is one allocator's, not also glibc's per-thread arenas. Built without the
// `mimalloc` feature (`--no-default-features --features tools`), kos uses the system's malloc, which heap profilers
// such as heaptrack follow.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Transparent huge pages off for this process (and the devnet's children): mimalloc's arenas are 2 MiB-aligned
    // and asked for huge pages, so each corner of one the node touched became a whole 2 MiB page: 12 MB of a
    // gossiping node's 14 MB of heap, 27 MB of a devnet home's 40 after 25 minutes (BENCHMARKS.md, *A home's
    // memory*; issue 28 item 7). Not fatal if the kernel refuses.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    kos::cli::main()
}
