//! `sidekey-agent`: see [`sidekey_agent::cli`].

fn main() -> std::process::ExitCode {
    sidekey_agent::cli::main()
}
