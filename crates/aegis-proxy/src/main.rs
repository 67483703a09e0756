//! The `aegis-proxy` command: parse arguments, load and validate configuration, run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aegis_carbon::simulate::{SimConfig, SimPolicy};
use aegis_carbon::trace::Trace;
use aegis_proxy::access_log::{AccessSink, AccessWriter};
use aegis_proxy::config::Config;
use aegis_proxy::demo::{self, DemoOptions};
use aegis_proxy::quick::QuickOptions;
use aegis_proxy::simulate;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, EnvFilter, Layer};

/// mimalloc, built without transparent huge pages (`no_thp`): against glibc malloc, less CPU per
/// HTTP/2 request (hyper allocates per stream) and 1.65 instead of 2.0 KB per idle connection;
/// with huge pages, idle RSS grew from 9 to 14.6 MB. See BENCHMARKS.md, "Allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Policies `simulate` can compare.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SimPolicyArg {
    RoundRobin,
    Nearest,
    Static,
    Greenest,
    Weighted,
    Oracle,
}

impl From<SimPolicyArg> for SimPolicy {
    fn from(p: SimPolicyArg) -> Self {
        match p {
            SimPolicyArg::RoundRobin => Self::RoundRobin,
            SimPolicyArg::Nearest => Self::Nearest,
            SimPolicyArg::Static => Self::Static,
            SimPolicyArg::Greenest => Self::Greenest,
            SimPolicyArg::Weighted => Self::Weighted,
            SimPolicyArg::Oracle => Self::Oracle,
        }
    }
}

/// Exit code for a configuration the proxy refuses to run.
const EXIT_CONFIG: u8 = 2;

/// Aegis-Flow: post-quantum reverse proxy.
#[derive(Debug, Parser)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("AEGIS_COMMIT"), ")"),
    about
)]
struct Cli {
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Diagnostics on stderr as text or as JSON lines (the access log is always JSON).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy from a configuration file.
    Run {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print every error with its key and line.
    Validate {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Proxy one address to one or more upstreams, without a configuration file.
    ReverseProxy(ReverseProxyArgs),
    /// Create a local CA and a certificate for localhost and 127.0.0.1.
    Cert {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Connect like a client; print the TLS version, key-exchange group, ALPN, certificate
    /// chain and response status (checks post-quantum TLS without another tool).
    Probe(ProbeArgs),
    /// Replay an hourly carbon-intensity trace through the routing policies and compare them.
    Simulate(SimulateArgs),
    /// Start loopback origins and the proxy on HTTPS with a fresh CA; Ctrl-C to stop.
    Demo {
        /// HTTPS listener address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
}

/// The flags of `reverse-proxy`.
#[derive(Debug, clap::Args)]
struct ReverseProxyArgs {
    /// Address to listen on: 127.0.0.1:8443, localhost:8080, or :8080 (every interface).
    #[arg(long)]
    from: String,
    /// Upstream host:port or http://host[:port] (repeat for several).
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Certificate chain (PEM) to serve TLS with.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Offer only the hybrid post-quantum group X25519MLKEM768.
    #[arg(long, requires = "tls_cert")]
    pq_only: bool,
    /// Also serve HTTP/3 over QUIC (UDP) on the same port.
    #[arg(long, requires = "tls_cert")]
    h3: bool,
    /// Write JSON access-log lines to stdout.
    #[arg(long)]
    access_log: bool,
    /// Serve the admin endpoints on this address.
    #[arg(long)]
    admin: Option<String>,
}

/// The flags of `probe`.
#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// https://host[:port]/path (or http:// for cleartext).
    url: http::Uri,
    /// Offer only X25519MLKEM768: fails unless the server speaks post-quantum TLS.
    #[arg(long, conflicts_with = "classical")]
    pq: bool,
    /// Offer only X25519 and P-256, as a client without post-quantum support would.
    #[arg(long)]
    classical: bool,
    /// HTTP version: 1.1, 2 or 3 (QUIC).
    #[arg(long, default_value = "1.1", value_parser = ["1.1", "2", "3"])]
    http: String,
    /// CA bundle (PEM) to verify the server with; Mozilla's roots by default.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// The flags of `simulate`.
#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Wide CSV: datetime_utc then one gCO2eq/kWh column per zone.
    #[arg(long)]
    trace: PathBuf,
    /// Regions as ZONE=RTT_MS,... (RTT from the users to each region).
    #[arg(long)]
    regions: String,
    /// Policies to compare (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    policy: Vec<SimPolicyArg>,
    /// Latency budget over the nearest region, ms (0 to 60000, as in the config file).
    #[arg(long, default_value_t = 50.0, value_parser = latency_budget)]
    latency_budget_ms: f64,
    /// Largest fraction of traffic one region may take (0.01 to 1, as in the config file).
    #[arg(long, default_value_t = 1.0, value_parser = traffic_share)]
    max_share: f64,
    /// Requests routed per trace hour (1 to 1000000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    requests_per_hour: u32,
    /// Hours by which the intensities greenest and weighted see lag the truth (feed delay).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=8760))]
    lag_hours: u16,
    /// Output: markdown, csv or json.
    #[arg(long, value_enum, default_value_t = simulate::Format::Markdown)]
    format: simulate::Format,
    /// Also write an SVG chart of each region's intensity and the region greenest (or the
    /// first policy listed) chose each hour.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sink = AccessSink::new();
    if let Err(error) = init_logging(cli.log_format, &sink) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Run { config: path } => match Config::load(&path) {
            Ok(config) => serve(cli.workers, config, Some(path), sink),
            Err(errors) => config_failure(&path, &errors),
        },
        Command::ReverseProxy(args) => quick(args, cli.workers, sink),
        Command::Cert { out } => match demo::write_certs(&out) {
            Ok(()) => {
                println!(
                    "wrote {0}/ca.pem, {0}/server.pem, {0}/server.key (localhost, 127.0.0.1, ::1), {0}/client.pem, {0}/client.key",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Simulate(args) => simulate_trace(args),
        Command::Probe(args) => probe(args),
        Command::Demo { listen, admin } => run_demo(listen, admin, cli.workers),
    }
}

fn validate(config: &Path) -> ExitCode {
    match Config::load(config) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{}: warning: {warning}", config.display());
            }
            println!("{}: ok", config.display());
            ExitCode::SUCCESS
        }
        Err(errors) => config_failure(config, &errors),
    }
}

fn quick(args: ReverseProxyArgs, workers: Option<usize>, sink: Arc<AccessSink>) -> ExitCode {
    let options = QuickOptions {
        from: args.from,
        to: args.to,
        tls: args.tls_cert.zip(args.tls_key),
        pq_only: args.pq_only,
        h3: args.h3,
        access_log: args.access_log,
        admin: args.admin,
    };
    match options.to_config(Path::new(".")) {
        Ok(config) => serve(workers, config, None, sink),
        Err(errors) => config_failure(Path::new("reverse-proxy"), &errors),
    }
}

fn simulate_trace(args: SimulateArgs) -> ExitCode {
    let policies: Vec<SimPolicy> = if args.policy.is_empty() {
        SimPolicy::ALL.to_vec()
    } else {
        args.policy.into_iter().map(Into::into).collect()
    };
    let mut config = SimConfig {
        requests_per_hour: args.requests_per_hour as usize,
        lag_hours: usize::from(args.lag_hours),
        ..SimConfig::default()
    };
    config.policy.latency_budget_ms = args.latency_budget_ms;
    config.policy.max_share = args.max_share;
    let output = SimOutput {
        format: args.format,
        svg: args.svg,
    };
    match run_simulation(&args.trace, &args.regions, &policies, &config, &output) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn probe(args: ProbeArgs) -> ExitCode {
    let options = aegis_proxy::probe::ProbeOptions {
        url: args.url,
        kx: match (args.pq, args.classical) {
            (true, _) => aegis_tls::KxPolicy::PostQuantumOnly,
            (_, true) => aegis_tls::KxPolicy::ClassicalOnly,
            _ => aegis_tls::KxPolicy::PreferPostQuantum,
        },
        http: match args.http.as_str() {
            "2" => aegis_proxy::probe::ProbeHttp::Http2,
            "3" => aegis_proxy::probe::ProbeHttp::Http3,
            _ => aegis_proxy::probe::ProbeHttp::Http1,
        },
        ca: args.ca,
        timeout: std::time::Duration::from_millis(args.timeout_ms),
    };
    block_on(Some(1), async move {
        let report = aegis_proxy::probe::probe(&options).await?;
        println!("{report}");
        Ok(())
    })
}

fn run_demo(listen: String, admin: String, workers: Option<usize>) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("aegis-demo-{}", std::process::id()));
    let options = DemoOptions {
        listen,
        admin,
        dir: dir.clone(),
    };
    let code = block_on(workers, async move {
        let stop = StopSignals::install()?;
        let running = demo::start(&options).await?;
        eprintln!("{}", demo::instructions(&options, &running));
        stop.wait().await;
        running.shutdown().await;
        Ok(())
    });
    // The demo's CA and keys are throwaway: they leave with the demo, however it ends.
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!(
                "cannot remove the demo's keys in {}: {error}",
                dir.display()
            );
        }
    }
    code
}

/// Where and how `simulate` writes its results.
struct SimOutput {
    format: simulate::Format,
    svg: Option<PathBuf>,
}

fn run_simulation(
    trace: &Path,
    regions: &str,
    policies: &[SimPolicy],
    config: &SimConfig,
    output: &SimOutput,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(trace)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", trace.display()))?;
    let trace = Trace::parse(&text)?;
    let (deployment, names) = simulate::deployment(regions, &trace)?;
    let report = simulate::run(&trace, &deployment, &names, policies, config);
    if let Some(path) = &output.svg {
        let charted = report
            .results
            .iter()
            .find(|r| r.policy == SimPolicy::Greenest)
            .or_else(|| report.results.first())
            .ok_or_else(|| anyhow::anyhow!("--svg needs at least one policy"))?;
        let svg = simulate::chart::svg(&trace, &deployment, &names, charted)
            .map_err(|e| anyhow::anyhow!("cannot draw the chart: {e}"))?;
        std::fs::write(path, svg)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report.render(output.format))
}

fn serve(
    workers: Option<usize>,
    config: Config,
    path: Option<PathBuf>,
    sink: Arc<AccessSink>,
) -> ExitCode {
    block_on(workers, async move {
        // Installed before any socket is bound, so an early SIGTERM still drains and exits 0.
        let stop = StopSignals::install()?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut rotate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        if let Some(file) = &config.access_log_file {
            sink.open(file).map_err(|e| {
                anyhow::anyhow!(
                    "server.access_log_file: cannot open {}: {e}",
                    file.display()
                )
            })?;
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            commit = env!("AEGIS_COMMIT"),
            config = path
                .as_ref()
                .map_or_else(|| "(flags)".to_owned(), |p| p.display().to_string()),
            "starting"
        );
        let running = match path {
            Some(path) => aegis_proxy::run_from_file(config, Registry::default(), path).await?,
            None => aegis_proxy::run(config, Registry::default()).await?,
        };
        let stopped = stop.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => break,
                // A reload logs its own summary, once.
                _ = rotate.recv() => match sink.reopen() {
                    Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                    Err(error) => tracing::error!(%error, "SIGUSR1: cannot reopen the access log"),
                },
                _ = hangup.recv() => match running.reload_file().await {
                    Ok(_) => {}
                    Err(errors) => {
                        for error in &errors.0 {
                            tracing::error!(%error, "SIGHUP: reload rejected, previous configuration stays");
                        }
                    }
                },
            }
        }
        tracing::info!("draining");
        if running.shutdown().await {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
        Ok(())
    })
}

fn block_on(
    workers: Option<usize>,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    // One worker: a current-thread runtime, so the client connection, the pooled upstream
    // connection and timers share one thread without cross-thread wake-ups.
    let mut builder = match workers {
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    if let Some(n) = workers.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.into()),
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// SIGTERM and SIGINT handlers, installed once.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

fn config_failure(path: &Path, errors: &aegis_proxy::config::ConfigErrors) -> ExitCode {
    for error in &errors.0 {
        eprintln!("{}: {error}", path.display());
    }
    ExitCode::from(EXIT_CONFIG)
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

/// JSON access-log lines go to stdout; diagnostics go to stderr, as text or JSON, filtered by
/// `RUST_LOG` (default `info`). An invalid `RUST_LOG` is an error, not silently ignored.
fn init_logging(format: LogFormat, sink: &Arc<AccessSink>) -> anyhow::Result<()> {
    let sink = sink.clone();
    // A write that fails (a log reader that went away) must never become a panic:
    // tracing-subscriber's fallback for it is `eprintln!`, which panics on a closed stderr.
    let access = tracing_subscriber::fmt::layer()
        .log_internal_errors(false)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(move || AccessWriter(sink.clone()))
        .with_filter(filter::Targets::new().with_target(
            aegis_proxy::http::record::ACCESS_LOG_TARGET,
            tracing::Level::INFO,
        ));
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={directives:?} is not a valid filter: {e}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    let not_access =
        filter::filter_fn(|meta| meta.target() != aegis_proxy::http::record::ACCESS_LOG_TARGET);
    let diagnostics = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .log_internal_errors(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .log_internal_errors(false)
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(access)
        .with(diagnostics.with_filter(not_access).with_filter(filter))
        .init();
    Ok(())
}

/// `--latency-budget-ms`: the range a cluster's `latency_budget_ms` accepts.
fn latency_budget(text: &str) -> Result<f64, String> {
    within(
        text,
        aegis_carbon::PolicyConfig::LATENCY_BUDGET_MS,
        "ms, e.g. 50",
    )
}

/// `--max-share`: the range a cluster's `max_share` accepts.
fn traffic_share(text: &str) -> Result<f64, String> {
    within(text, aegis_carbon::PolicyConfig::MAX_SHARE, "e.g. 0.5")
}

/// `text` as a number in `range` (NaN never is).
fn within(text: &str, range: std::ops::RangeInclusive<f64>, example: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(format!(
            "{text:?} is not a number in {}..={} ({example})",
            range.start(),
            range.end()
        )),
    }
}
