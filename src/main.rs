//! The `sidekey` command line (the code is in [`sidekey::cli`]).

fn main() -> std::process::ExitCode {
    sidekey::cli::main()
}
