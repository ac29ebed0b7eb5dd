//! The `sidekey` command line: `inject`, `audit` and `migrate`.

use std::io::Read;
use std::path::PathBuf;

pub mod audit;
#[cfg(feature = "online")]
pub mod cluster;
pub mod inject;
pub mod migrate;
#[cfg(feature = "online")]
pub mod store;

/// The message for `--cluster`/`--push` in a build without them.
#[cfg(not(feature = "online"))]
pub const OFFLINE: &str = "this sidekey was built without the `online` feature: --cluster and --push are not available";

/// Runs `fut` on a single-threaded runtime (the CLI's network calls are
/// few and sequential).
///
/// # Errors
/// `fut`'s error, or the runtime's.
#[cfg(feature = "online")]
pub fn block_on<T>(fut: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?
        .block_on(fut)
}

/// sidekey takes secrets out of Kubernetes pod specs and env vars: an agent
/// sidecar writes them as files into an in-memory volume and keeps them current.
#[derive(clap::Parser)]
#[command(name = "sidekey", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Inject(inject::InjectArgs),
    Audit(audit::AuditArgs),
    Migrate(migrate::MigrateArgs),
}

/// The `sidekey` command: parses the arguments, runs the subcommand.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cli = Cli::parse();
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Inject(args) => inject::run(&args, &mut stdout, &mut stderr),
        Command::Audit(args) => audit::run(&args, &mut stdout, &mut stderr),
        Command::Migrate(args) => migrate::run(&args, &mut stdout, &mut stderr),
    };
    std::process::ExitCode::from(code)
}

/// Expands `-f` arguments: `-` and files as given, directories recursively
/// (`*.yaml`, `*.yml`, `*.json`, sorted).
///
/// # Errors
/// When a directory cannot be listed.
pub fn collect_files(path: &PathBuf, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.as_os_str() == "-" || !path.is_dir() {
        out.push(path.clone());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// One input file's name (as shown in messages) and text.
pub struct Input {
    /// The path, or `<stdin>`.
    pub shown: String,
    /// Its content.
    pub text: String,
}

/// Expands and reads every `-f` argument, reporting the first unreadable
/// one on `stderr`.
///
/// # Errors
/// The exit code ([`exit::NO_INPUT`]) when an input cannot be read.
pub fn read_inputs(args: &[PathBuf], stderr: &mut dyn std::io::Write) -> Result<Vec<Input>, u8> {
    let mut files = Vec::new();
    for f in args {
        if let Err(e) = collect_files(f, &mut files) {
            let _ = writeln!(stderr, "error: {}: {e}", f.display());
            return Err(exit::NO_INPUT);
        }
    }
    let mut out = Vec::new();
    for path in &files {
        let shown = if path.as_os_str() == "-" { "<stdin>".to_owned() } else { path.display().to_string() };
        match read_input(path) {
            Ok(text) => out.push(Input { shown, text }),
            Err(e) => {
                let _ = writeln!(stderr, "error: {shown}: {e}");
                return Err(exit::NO_INPUT);
            }
        }
    }
    Ok(out)
}

/// The largest input file read (a pull request can hand the CLI any file;
/// no manifest comes near it: the API server's own limit is 3 MiB per object).
pub const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// Reads a file, or stdin for `-`, up to [`MAX_INPUT`] bytes.
///
/// # Errors
/// When it cannot be read, is not UTF-8, or is larger than [`MAX_INPUT`].
pub fn read_input(path: &PathBuf) -> std::io::Result<String> {
    let mut s = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_INPUT + 1).read_to_string(&mut s)?
    } else {
        std::fs::File::open(path)?.take(MAX_INPUT + 1).read_to_string(&mut s)?
    };
    if read as u64 > MAX_INPUT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB: not a manifest sidekey reads", MAX_INPUT / (1024 * 1024)),
        ));
    }
    Ok(s)
}

/// Exit codes, after BSD `sysexits.h`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input is not valid (a workload sidekey refuses, YAML that does not parse).
    pub const INVALID_INPUT: u8 = 1;
    /// Bad configuration (`--config`).
    pub const CONFIG: u8 = 64;
    /// An input file cannot be read.
    pub const NO_INPUT: u8 = 66;
    /// The cluster or a secret store cannot be reached or refuses.
    pub const UNAVAILABLE: u8 = 69;
    /// Output cannot be written.
    pub const IO: u8 = 74;
}
