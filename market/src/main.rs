//! `leasehold-market`: the market indexer and its API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use leasehold_contracts::Deployment;
use leasehold_contracts::bindings::TestToken;
use leasehold_market::api::{self, ApiState, TokenInfo};
use leasehold_market::console::Console;
use leasehold_market::ingest::{Ingest, IngestConfig, Progress};
use leasehold_market::store::{Store, redact_password};
use tokio::sync::broadcast;

const DEFAULT_DATABASE: &str = "sqlite://leasehold-market.db?mode=rwc";

#[derive(Parser)]
#[command(
    name = "leasehold-market",
    version,
    about = "Indexes the Leasehold marketplace into SQLite or PostgreSQL and serves a JSON API with a live event stream",
    after_help = "Examples:\n  \
      leasehold-market run --rpc-url http://127.0.0.1:8545 --deployment deployment.json\n  \
      leasehold-market run --rpc-url https://rpc.example --deployment deployment.json \\\n      \
      --database-url postgres://market:secret@127.0.0.1/market --confirmations 12 --listen 127.0.0.1:8480\n  \
      leasehold-market status --output json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the chain and serve the API until interrupted.
    #[command(after_help = "Examples:\n  \
        leasehold-market run --rpc-url http://127.0.0.1:8545 --deployment deployment.json\n  \
        curl -s http://127.0.0.1:8480/api/v1/status\n  \
        curl -N http://127.0.0.1:8480/api/v1/stream")]
    Run {
        /// JSON-RPC endpoint of the chain.
        #[arg(long, env = "LEASEHOLD_RPC_URL")]
        rpc_url: String,
        /// The contracts' deployment file (written by leasehold-deploy).
        #[arg(long)]
        deployment: PathBuf,
        /// `sqlite://FILE?mode=rwc` (default) or `postgres://USER:PASSWORD@HOST/DB`.
        #[arg(long, env = "LEASEHOLD_MARKET_DATABASE_URL", default_value = DEFAULT_DATABASE)]
        database_url: String,
        /// Address the API listens on.
        #[arg(long, default_value = "127.0.0.1:8480")]
        listen: SocketAddr,
        /// Blocks below the head before a block is indexed (deeper reorgs are rewound).
        #[arg(long, default_value_t = 2)]
        confirmations: u64,
        /// Pause between polls for new blocks once caught up, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_interval_ms: u64,
        /// Largest block range per eth_getLogs call.
        #[arg(long, default_value_t = leasehold_contracts::DEFAULT_MAX_LOG_RANGE)]
        max_log_range: u64,
        /// Events one stream reconnect replays after its Last-Event-ID before the stream ends
        /// (the client then resumes from its last id).
        #[arg(long, default_value_t = api::DEFAULT_MAX_REPLAY, value_parser = clap::value_parser!(u32).range(1..))]
        max_stream_replay: u32,
        /// The chain RPC URL the web console's browsers use, shown by /api/v1/status
        /// (default: --rpc-url; set it when --rpc-url holds an API key or is reachable only
        /// from this host).
        #[arg(long)]
        public_rpc_url: Option<String>,
        /// The built web console served at / (default: market/console/dist under the
        /// current directory when it holds one; else / says how to build it).
        #[arg(long)]
        console_dir: Option<PathBuf>,
        /// Gateway calls relayed at once (a followed log stream counts until it ends); more
        /// are refused with 503 relay_busy.
        #[arg(long, default_value_t = leasehold_market::relay::DEFAULT_MAX_CALLS, value_parser = clap::value_parser!(u32).range(1..))]
        relay_max_calls: u32,
    },
    /// Show how far the index is and how many rows each table holds.
    #[command(after_help = "Examples:\n  \
        leasehold-market status\n  \
        leasehold-market status --database-url postgres://market:secret@127.0.0.1/market --output json")]
    Status {
        #[arg(long, env = "LEASEHOLD_MARKET_DATABASE_URL", default_value = DEFAULT_DATABASE)]
        database_url: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                rpc_url,
                deployment,
                database_url,
                listen,
                confirmations,
                poll_interval_ms,
                max_log_range,
                max_stream_replay,
                public_rpc_url,
                console_dir,
                relay_max_calls,
            } => {
                let console = Console::from_flag(console_dir.as_deref())?;
                let public_rpc_url = public_rpc_url.unwrap_or_else(|| rpc_url.clone());
                run(
                    &rpc_url,
                    &deployment,
                    &database_url,
                    listen,
                    Serving {
                        max_replay: max_stream_replay,
                        public_rpc_url,
                        console,
                        relay_max_calls,
                    },
                    IngestConfig {
                        confirmations,
                        poll_interval: Duration::from_millis(poll_interval_ms),
                        max_range: max_log_range,
                        ..IngestConfig::default()
                    },
                )
                .await
            }
            Command::Status {
                database_url,
                output,
            } => status(&database_url, output).await,
        }
    })
}

/// How the API and console are served.
struct Serving {
    max_replay: u32,
    public_rpc_url: String,
    console: Console,
    relay_max_calls: u32,
}

async fn run(
    rpc_url: &str,
    deployment_path: &std::path::Path,
    database_url: &str,
    listen: SocketAddr,
    serving: Serving,
    config: IngestConfig,
) -> Result<()> {
    let deployment = Deployment::load(deployment_path)?;
    let url = rpc_url
        .parse()
        .with_context(|| format!("--rpc-url `{rpc_url}` is not a URL"))?;
    let rpc = ProviderBuilder::new().connect_http(url).erased();
    let chain_id = rpc
        .get_chain_id()
        .await
        .with_context(|| format!("reading the chain id from {rpc_url}"))?;
    anyhow::ensure!(
        chain_id == deployment.chain_id,
        "{rpc_url} serves chain {chain_id}, but {} is for chain {}",
        deployment_path.display(),
        deployment.chain_id
    );
    let token_contract = TestToken::new(deployment.token, &rpc);
    let token = TokenInfo {
        symbol: token_contract
            .symbol()
            .call()
            .await
            .with_context(|| format!("reading the token {}'s symbol", deployment.token))?,
        decimals: token_contract
            .decimals()
            .call()
            .await
            .with_context(|| format!("reading the token {}'s decimals", deployment.token))?,
    };
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("opening {}", redact_password(database_url)))?;
    let (stream, _) = broadcast::channel(4096);
    let progress = Arc::new(Progress::default());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%listen, database = %redact_password(database_url), "serving the market API");
    match serving.console.root() {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), url = %format!("http://{listen}/"), "serving the web console")
        }
        None => tracing::info!(
            "no web console: build it with `scripts/console build` or pass --console-dir"
        ),
    }
    let state = ApiState {
        store: store.clone(),
        deployment,
        rpc: rpc.clone(),
        confirmations: config.confirmations,
        token,
        stream: stream.clone(),
        progress: progress.clone(),
        max_replay: serving.max_replay,
        public_rpc_url: serving.public_rpc_url,
        relay_calls: Arc::new(tokio::sync::Semaphore::new(
            serving.relay_max_calls as usize,
        )),
        gateways: Arc::default(),
    };
    let ingest = Ingest::new(store, deployment, rpc, stream, progress, config);
    let server = axum::serve(listener, api::router(state, serving.console));
    tokio::select! {
        result = server => result.context("API server")?,
        _ = ingest.run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}

async fn status(database_url: &str, output: Output) -> Result<()> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("opening {}", redact_password(database_url)))?;
    let cursor = store.cursor().await?;
    let counts = store.counts().await?;
    let indexed_block = cursor.map(|cursor| cursor.next_block.saturating_sub(1));
    match output {
        Output::Json => {
            let tables: serde_json::Map<String, serde_json::Value> = counts
                .iter()
                .map(|(table, count)| ((*table).to_owned(), serde_json::json!(count)))
                .collect();
            println!(
                "{}",
                serde_json::json!({"indexed_block": indexed_block, "tables": tables})
            );
        }
        Output::Text => {
            match indexed_block {
                Some(block) => println!("indexed through block {block}"),
                None => println!("nothing indexed yet"),
            }
            for (table, count) in counts {
                println!("{table:<20} {count}");
            }
        }
    }
    store.close().await;
    Ok(())
}
