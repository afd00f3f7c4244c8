//! The fleetgate gateway: the `fleetgate` command line ([`run_cli`]: `serve` runs the gateway,
//! `simulate` plays a fleet of clusters against it), kept in a library so that the fuzz targets
//! reach the config parser ([`fuzzing`]).

mod auth;
mod body_timeout;
mod config;
mod error;
mod export;
mod grpc;
mod http;
mod inflight;
mod kubecost;
mod listen;
mod otlp;
mod pgwire;
mod prom_api;
mod pull;
mod query_pool;
mod reader;
mod serve;
mod simulate;
mod sql;
mod telemetry;
mod tls;

#[doc(hidden)]
pub mod fuzzing;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// fleetgate: one gateway for the metrics of every Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (remote-write receiver, storage, health and metrics).
    Serve(ServeArgs),
    /// Play a fleet of simulated clusters sending remote-write to a gateway (or record the payloads).
    Simulate(simulate::SimulateArgs),
    /// Read a password on stdin and print its SCRAM-SHA-256 verifier for `users[].password_scram`.
    Passwd,
}

/// Flags of `fleetgate serve`. Each also reads a `FLEETGATE_*` env var; any config key can be set
/// with `FLEETGATE__SECTION__KEY`. Precedence: defaults < file < env < flags.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// YAML config file (see deploy/fleetgate.example.yaml).
    #[arg(long, env = "FLEETGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Local data directory (WAL, Parquet partitions, catalog). Default ./data.
    #[arg(long, env = "FLEETGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address. Default 127.0.0.1:9201 in open dev mode, 0.0.0.0:9201 with tokens.
    #[arg(long, env = "FLEETGATE_HTTP_ADDR")]
    http_addr: Option<String>,
    /// OTLP/gRPC listen address, or `off`. Default :4317 (127.0.0.1 in open dev mode).
    #[arg(long, env = "FLEETGATE_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<String>,
    /// A Kubecost multi-cluster clusters.yaml (ConfigMap or its data file): each entry becomes a
    /// cluster with a pull source.
    #[arg(long, env = "FLEETGATE_KUBECOST_CLUSTERS")]
    kubecost_clusters: Option<PathBuf>,
    /// PostgreSQL wire listen address, or `off`. Default :5433 (127.0.0.1 in open dev mode).
    #[arg(long, env = "FLEETGATE_PG_ADDR")]
    pg_addr: Option<String>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

/// Parses the command line and runs the chosen command (the whole of `fleetgate`'s `main`).
pub fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tls::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let flags = config::FlagOverrides {
                data_dir: args.data_dir,
                http_addr: args.http_addr,
                otlp_grpc_addr: args.otlp_grpc_addr,
                kubecost_clusters: args.kubecost_clusters,
                pg_addr: args.pg_addr,
            };
            let cfg = config::Config::load(args.config.as_deref(), std::env::vars(), &flags)?;
            let from = config::LoadSource {
                file: args.config.clone(),
                flags,
            };
            if args.print_config {
                print!("{}", serde_yaml::to_string(&cfg)?);
                return Ok(());
            }
            rt.block_on(serve::run(cfg, Some(from)))
        }
        Command::Simulate(args) => rt.block_on(simulate::run(args)),
        Command::Passwd => passwd(),
    }
}

/// `fleetgate passwd`: the first line of stdin (without its line ending) → a verifier on stdout.
fn passwd() -> anyhow::Result<()> {
    use std::io::BufRead as _;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password (echoed; pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("empty password on stdin");
    }
    println!("{}", auth::new_verifier(password)?);
    Ok(())
}
