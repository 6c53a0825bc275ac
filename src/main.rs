//! The `wagate` command: parse arguments, load the configuration, set up
//! logging, run. Nothing else lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wagate::config::Config;

/// mimalloc serves a proxied send's allocations (the upstream connection's
/// 8 KiB read buffer among them) from per-thread free lists, where glibc
/// takes its slow path: 4.4% fewer instructions and about 3% less CPU per
/// send (BENCHMARKS.md). `no_thp` keeps its heap out of transparent
/// huge pages, which otherwise raise peak memory by 20 MiB while a large
/// upload streams.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wagate",
    version,
    about = "Circuit-breaking gateway for the WhatsApp Business Cloud API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// Configuration file [default: config/wagate.toml when it exists, else built-in defaults]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
    /// Run the Graph API simulator (for demos, tests and load tests).
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Do not keep a log of requests (for load tests).
        #[arg(long)]
        no_record: bool,
    },
    /// Show the breaker at work against the simulator, in process: no Meta account needed.
    Demo {
        /// Keep the simulator and the gateway running after the demo, until
        /// Ctrl-C, to look at the status page, the admin API and /metrics.
        #[arg(long)]
        keep_running: bool,
    },
    #[command(flatten)]
    Admin(wagate::cli::AdminCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2 on a usage error, which the admin commands use for
        // "not found"; a usage error is 1, like every other failure.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => load(&cli.serve, &env).and_then(serve),
        Command::CheckConfig => load(&cli.serve, &env).map(|config| {
            print!("{}", config.to_redacted_toml());
        }),
        Command::Sim { listen, no_record } => sim(listen, !no_record),
        Command::Demo { keep_running } => demo(keep_running),
        Command::Admin(command) => return wagate::cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wagate: {error}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn load(args: &ServeArgs, env: &HashMap<String, String>) -> Result<Config, BoxError> {
    Ok(Config::load(args.config.as_deref(), env)?)
}

fn serve(config: Config) -> Result<(), BoxError> {
    wagate::telemetry::init(&config.log, std::io::stderr)?;
    runtime(config.server.worker_threads)?.block_on(async {
        let listeners = wagate::Listeners::bind(&config).await?;
        wagate::run(config, listeners, shutdown_signal()).await?;
        Ok(())
    })
}

fn sim(listen: SocketAddr, record: bool) -> Result<(), BoxError> {
    let log = wagate::config::Log::default();
    wagate::telemetry::init(&log, std::io::stderr)?;
    runtime(0)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("wagate sim listening on {}", listener.local_addr()?);
        let sim = wagate::sim::Sim::new(wagate::sim::SimOptions { record });
        sim.serve(listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// The gateway logs warnings only, so the narration on stdout stays readable.
fn demo(keep_running: bool) -> Result<(), BoxError> {
    use std::io::IsTerminal;
    let log = wagate::config::Log {
        level: "warn".to_owned(),
        ..Default::default()
    };
    wagate::telemetry::init(&log, std::io::stderr)?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let linger = keep_running.then(|| {
        Box::pin(shutdown_signal())
            as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    });
    runtime(0)?.block_on(wagate::demo::run_then(std::io::stdout(), color, linger))?;
    Ok(())
}

/// One worker thread runs a current-thread runtime: no cross-thread wake-ups,
/// which is what a gateway pinned to one core wants.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if worker_threads > 1 {
        builder.worker_threads(worker_threads);
    }
    builder.enable_all().build()
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
