//! The `kos` command; all wiring lives in the `kos` library so tests reuse it.

fn main() -> std::process::ExitCode {
    kos::cli::main()
}
