//! The CLI, as `sidekey`.

fn main() -> std::process::ExitCode {
    sidekey::cli::main()
}
