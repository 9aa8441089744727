//! The `kos` command; all wiring lives in the `kos` library so tests reuse it.

// A node allocates and frees many small buffers (entries, keys, gossip frames) across threads; mimalloc does that
// with less work than the system allocator (BENCHMARKS.md, ledger).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kos::cli::main()
}
