//! The injector, as `sidekey-injector`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sidekey_injector::cli::main()
}
