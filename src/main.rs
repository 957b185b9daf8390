use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use sluice::config::{self, Config, RuntimeModel};
use sluice::infra::telemetry;
use sluice::infra::workers::{self, Workers};
use sluice::server::{Gateway, raise_fd_limit, shutdown_signal};

/// mimalloc rather than glibc's malloc: a call makes about a hundred
/// short-lived allocations, which mimalloc's per-thread free lists serve
/// faster (25-35% more throughput, `docs/performance.md`). It is built
/// without transparent huge pages (`no_thp`), which cost a third more
/// memory per open stream; it returns freed memory to the system lazily,
/// on later allocations, so RSS falls after a burst only as traffic goes on.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Sluice: a fast, exact gateway for OpenAI-compatible APIs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Path to the TOML config file.
    #[arg(
        long,
        env = "SLUICE_CONFIG",
        default_value = "config/sluice.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config and print a summary of deployments, models and keys.
    Check,
    /// Exit 0 when the gateway on this host answers `GET /readyz` on its
    /// configured listener with 200 within 2 s (for container health checks).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load_from_path(&cli.config) {
        Ok(config) => config,
        Err(error) => return fail(&format!("invalid config: {error}")),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let _ = std::io::stdout().write_all(sluice::cli::check::summary(&config).as_bytes());
            ExitCode::SUCCESS
        }
        Command::Healthcheck => match sluice::cli::healthcheck::check(&config.server.listen) {
            Ok(status) => {
                let _ = writeln!(std::io::stdout(), "ready: {status}");
                ExitCode::SUCCESS
            }
            Err(problem) => fail(&format!("not ready: {problem}")),
        },
        Command::Run => run(config, cli.config),
    }
}

fn run(config: Config, path: PathBuf) -> ExitCode {
    let _log = telemetry::init(&config.log);
    raise_fd_limit();
    let threads = config.server.worker_threads();
    let runtime = match config.server.runtime {
        RuntimeModel::PerCore => workers::single_threaded(),
        RuntimeModel::Shared => workers::shared(threads),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    // Thread per core: the main runtime is worker 0, the others start here.
    let workers = match config.server.runtime {
        RuntimeModel::PerCore => match Workers::start(threads, runtime.handle()) {
            Ok(workers) => Some(workers),
            Err(error) => return fail(&format!("cannot start the worker threads: {error}")),
        },
        RuntimeModel::Shared => None,
    };
    tracing::info!(
        threads,
        runtime = config.server.runtime.name(),
        "worker threads"
    );
    let spread = workers.as_ref().map(Workers::spread);
    let result = runtime.block_on(async {
        // Before anything listens: a signal from then on is a shutdown.
        let stop = shutdown_signal();
        let listeners = Gateway::bind(&config).await?;
        let mut gateway = Gateway::from_file(config, path)?;
        if let Some(spread) = spread {
            gateway = gateway.spread_over(spread);
        }
        gateway.serve(listeners, stop).await
    });
    // The gateway has drained its connections and tasks: the workers'
    // runtimes hold nothing that must finish.
    if let Some(workers) = workers {
        workers.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "sluice stopped");
            fail(&error.to_string())
        }
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::FAILURE
}
