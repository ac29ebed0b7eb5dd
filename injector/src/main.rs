//! `sidekey-injector`: see [`sidekey_injector::cli`].

// The allocator matters on the admission path: see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sidekey_injector::cli::main()
}
