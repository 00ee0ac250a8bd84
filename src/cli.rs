//! The `feedrank` command line: `serve`, `snapshot check`, `snapshot index`, `demo`, `bench ann`,
//! `eval hashtags`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::api::{self, AppState};
use crate::candidates::{EXACT_USER_POOL, IndexKind, Pools, Retriever, UserIndex};
use crate::config::{LogFormat, ServeConfig};
use crate::demo::{self, DemoConfig};
use crate::eval::ann::{self, AnnBenchConfig, AnnData, Engine};
use crate::eval::hashtags as hashtag_eval;
use crate::feed::{FeedError, FeedOptions, Model, Weights};
use crate::index::{FlatHnswIndex, IndexBinding, StoredIndexError};
use crate::lifecycle::Lifecycle;
use crate::live::{Live, LiveOptions};
use crate::profiles::Profiles;
use crate::snapshot::{self, Issue, Metric, Snapshot, Summary, files, thousands};

#[derive(Debug, Parser)]
#[command(
    name = "feedrank",
    version,
    about = "Feed ranking: HNSW retrieval blended with value-first, low-ad scoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the feed API over HTTP.
    Serve(ServeArgs),
    /// Inspect model snapshots.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Write a synthetic demo world as a snapshot.
    Demo(DemoArgs),
    /// Measure the retrieval engines.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Measure recommendations on held-out data.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Ask a running service to load another snapshot (or to roll back), through its admin
    /// API; the admin token comes from FEEDRANK_ADMIN_TOKEN. Exits 1 if the service refuses.
    Reload(ReloadArgs),
}

#[derive(Debug, clap::Args)]
struct ReloadArgs {
    /// Snapshot directory, relative to the service's models directory.
    #[arg(required_unless_present = "rollback")]
    path: Option<String>,
    /// Return to the snapshot that served before the current one instead.
    #[arg(long, conflicts_with = "path")]
    rollback: bool,
    /// The service's address (default 127.0.0.1:8080).
    #[arg(long, env = "FEEDRANK_ADDR", default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// hit@k and MRR@k of hashtag recommendations (popularity, cold, warm, history, and
    /// newcomers onboarded with a few hashtags, with and without their neighbours) on the
    /// posts of a held-out split; exits 1 if an input is missing or malformed.
    Hashtags(HashtagEvalArgs),
}

#[derive(Debug, clap::Args)]
struct HashtagEvalArgs {
    /// Snapshot of the training split.
    #[arg(long)]
    snapshot: PathBuf,
    /// Held-out posts, one per line: text<TAB>user_id<TAB>tag<TAB>tag...
    #[arg(long)]
    valid: PathBuf,
    /// Hashtags recommended per user.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Hashtags an onboarded newcomer picks: the author's first ones.
    #[arg(long, default_value_t = hashtag_eval::DEFAULT_PICKS)]
    picks: usize,
    /// TOML config file (as for `serve`): its [feed] options, [feed.hashtags] above all.
    #[arg(long, env = "FEEDRANK_CONFIG")]
    config: Option<PathBuf>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Recall and single-thread latency of the flat HNSW search, hnsw_rs's search and the exact
    /// scan against a given ground truth; exits 1 if an input is missing or does not fit.
    Ann(AnnArgs),
}

#[derive(Debug, clap::Args)]
struct AnnArgs {
    /// Base vectors: n × d float32 .npy.
    #[arg(long)]
    base: PathBuf,
    /// Queries: q × d float32 .npy.
    #[arg(long)]
    queries: PathBuf,
    /// Row ids of each query's exact top-K in the base, best first: q × K int32 .npy.
    #[arg(long)]
    truth: PathBuf,
    /// cosine (base rows are normalised on load) or dot.
    #[arg(long, default_value = "cosine", value_parser = parse_metric)]
    metric: Metric,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// Breadth of the beam while inserting into the graph.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Search beams to sweep; each run uses max(ef, k).
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256,512")]
    ef: Vec<usize>,
    /// Recall cut-offs; the smallest and the largest are the k requested.
    #[arg(long, value_delimiter = ',', default_value = "10,100,200")]
    k: Vec<usize>,
    /// Engines to run, in order: flat, hnsw_rs, exact.
    #[arg(long, value_delimiter = ',', default_value = "flat,hnsw_rs,exact")]
    engines: Vec<Engine>,
    /// Run the exact scan on only the first N queries (it is slow on large bases).
    #[arg(long)]
    exact_queries: Option<usize>,
    /// Timed passes over the queries per run; each query counts its fastest pass, which on a
    /// shared machine is the closest to the engine's own cost.
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_metric(s: &str) -> Result<Metric, String> {
    match s {
        "cosine" => Ok(Metric::Cosine),
        "dot" => Ok(Metric::Dot),
        _ => Err(format!("unknown metric `{s}` (cosine or dot)")),
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Snapshot directory (default: the bundled demo world, models/demo).
    #[arg(long, env = "FEEDRANK_SNAPSHOT")]
    snapshot: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "FEEDRANK_ADDR")]
    addr: Option<std::net::SocketAddr>,
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "FEEDRANK_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (default text).
    #[arg(long, env = "FEEDRANK_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Directory of the write-ahead log of live events (default: ./data).
    #[arg(long, env = "FEEDRANK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory the admin routes may load snapshots from (default: the snapshot's parent).
    #[arg(long, env = "FEEDRANK_MODELS_DIR")]
    models_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Validate a snapshot and print its summary, and whether its stored index (posts.index)
    /// can be used; exits 1 if the snapshot breaks the format.
    Check {
        /// Snapshot directory.
        dir: PathBuf,
        /// TOML config file (as for `serve`) whose [feed] options a stored index must match
        /// (the defaults without one).
        #[arg(long, env = "FEEDRANK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Build the snapshot's HNSW index and store it in the snapshot directory as posts.index,
    /// which `serve` then loads instead of building the index.
    Index {
        /// Snapshot directory.
        dir: PathBuf,
        /// TOML config file (as for `serve`): the index is built with its [feed] options
        /// (the defaults without one).
        #[arg(long, env = "FEEDRANK_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Directory to write the snapshot into.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = DemoConfig::default().posts)]
    posts: usize,
    #[arg(long, default_value_t = DemoConfig::default().users)]
    users: usize,
    #[arg(long, default_value_t = DemoConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = DemoConfig::default().dim)]
    dim: usize,
    /// Overwrite a non-empty output directory.
    #[arg(long)]
    force: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Snapshot {
            command: SnapshotCommand::Check { dir, config },
        } => check(&dir, config.as_deref()),
        Command::Snapshot {
            command: SnapshotCommand::Index { dir, config },
        } => store_index(&dir, config.as_deref()),
        Command::Demo(args) => write_demo(args),
        Command::Reload(args) => reload(args),
        Command::Bench {
            command: BenchCommand::Ann(args),
        } => bench_ann(args),
        Command::Eval {
            command: EvalCommand::Hashtags(args),
        } => eval_hashtags(args),
    }
}

fn eval_hashtags(args: HashtagEvalArgs) -> ExitCode {
    let Some(options) = feed_options(args.config.as_deref()) else {
        return ExitCode::FAILURE;
    };
    let held_out = match hashtag_eval::validate_k(args.k)
        .and_then(|()| hashtag_eval::validate_picks(args.picks))
        .and_then(|()| hashtag_eval::read_held_out(&args.valid))
    {
        Ok(held_out) => held_out,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model = match Model::load(&args.snapshot, options) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {}: {e}", args.snapshot.display());
            return ExitCode::FAILURE;
        }
    };
    match hashtag_eval::run(&model, &held_out, args.k, args.picks) {
        Ok(report) if args.json => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_ann(args: AnnArgs) -> ExitCode {
    let config = AnnBenchConfig {
        metric: args.metric,
        max_connections: args.m,
        ef_construction: args.ef_construction,
        efs: args.ef,
        ks: args.k,
        engines: args.engines,
        exact_queries: args.exact_queries,
        passes: args.passes,
    };
    let result = config
        .validate()
        .and_then(|()| {
            AnnData::load(
                &args.base,
                &args.queries,
                &args.truth,
                config.metric,
                config.max_k(),
            )
        })
        .and_then(|data| {
            ann::run(data, &config, |record| {
                if args.json {
                    match serde_json::to_string(record) {
                        Ok(line) => println!("{line}"),
                        Err(e) => eprintln!("error: cannot encode a record: {e}"),
                    }
                } else {
                    println!("{record}");
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(dir: &Path, config: Option<&Path>) -> ExitCode {
    let Some(options) = feed_options(config) else {
        return ExitCode::FAILURE;
    };
    match validate(dir) {
        Ok(snapshot) => {
            println!("{}", Summary::of(&snapshot));
            println!("{}", stored_index_status(dir, &snapshot, &options));
            if let Some(line) = stored_user_index_status(dir, &snapshot, &options) {
                println!("{line}");
            }
            println!("OK: {} is a valid snapshot", dir.display());
            ExitCode::SUCCESS
        }
        Err(issues) => reject(dir, &issues),
    }
}

/// Loads and validates the snapshot in `dir` as `serve` would, or lists its problems.
fn validate(dir: &Path) -> Result<Snapshot, Vec<Issue>> {
    let snapshot = snapshot::load(dir).map_err(|e| e.issues().to_vec())?;
    // The scoring section's vocabulary (scoring weights and policy knobs) belongs to the
    // layers that use it: check it here too, so that `check` accepts exactly what `serve`
    // accepts.
    if let Err(e) = Weights::default().overridden(&snapshot.manifest.scoring) {
        return Err(vec![Issue {
            file: files::MANIFEST.to_string(),
            line: None,
            field: Some(format!("scoring.{}", e.field)),
            message: e.message,
        }]);
    }
    Ok(snapshot)
}

fn reject(dir: &Path, issues: &[Issue]) -> ExitCode {
    for issue in issues {
        eprintln!("error: {issue}");
    }
    eprintln!(
        "{}: {} problem(s); the snapshot is rejected",
        dir.display(),
        issues.len()
    );
    ExitCode::FAILURE
}

/// The `[feed]` options of the config file, or the defaults; `None` (reported) if the file is
/// unusable.
fn feed_options(config: Option<&Path>) -> Option<FeedOptions> {
    match config.map(ServeConfig::from_file) {
        None => Some(FeedOptions::default()),
        Some(Ok(config)) => Some(config.feed),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// One line for `snapshot check`: whether `serve` would load the stored index, and if not why.
fn stored_index_status(dir: &Path, snapshot: &Snapshot, options: &FeedOptions) -> String {
    let path = dir.join(files::POSTS_INDEX);
    let pools = Pools::of(&snapshot.posts);
    let exact = options.index == IndexKind::Exact;
    let status = match Retriever::load_hnsw(&path, snapshot, &pools, options.hnsw_params()) {
        Ok(retriever) => format!(
            "{} matches ({} organic posts, max_connections {}, ef_construction {})",
            files::POSTS_INDEX,
            thousands(retriever.organic_len()),
            options.hnsw_max_connections,
            options.hnsw_ef_construction
        ),
        Err(e) if e.is_not_found() && exact => "none".to_string(),
        Err(e) if e.is_not_found() => "none (serve builds the HNSW index when it loads)".into(),
        Err(e) if exact => format!("stale: {e}"),
        Err(e) => format!("stale: {e} (serve builds the HNSW index instead)"),
    };
    let unused = if exact {
        "; unused with [feed] index = \"exact\""
    } else {
        ""
    };
    format!("{:<18}{status}{unused}", "stored index")
}

/// One line for `snapshot check` on `users.index`, for a snapshot with more users than are
/// searched exactly (`None` otherwise: no file is needed).
fn stored_user_index_status(
    dir: &Path,
    snapshot: &Snapshot,
    options: &FeedOptions,
) -> Option<String> {
    if snapshot.users.len() <= EXACT_USER_POOL {
        return None;
    }
    let rows: Vec<u32> = (0..snapshot.users.len() as u32).collect();
    let binding = IndexBinding {
        source: files::USERS_NPY,
        source_sha256: snapshot.users_sha256().unwrap_or_default(),
        vectors: &snapshot.user_vectors,
        rows: &rows,
        metric: snapshot.metric(),
        params: options.hnsw_params(),
    };
    let status = match FlatHnswIndex::read_from(&dir.join(files::USERS_INDEX), &binding) {
        Ok(_) => format!(
            "{} matches ({} users)",
            files::USERS_INDEX,
            thousands(rows.len())
        ),
        Err(e) if e.is_not_found() => "none (serve builds the users' graph when it loads)".into(),
        Err(e) => format!("stale: {e} (serve builds the users' graph instead)"),
    };
    Some(format!("{:<18}{status}", "stored user index"))
}

/// `snapshot index`: builds the HNSW index as `serve` would and stores it in the snapshot.
fn store_index(dir: &Path, config: Option<&Path>) -> ExitCode {
    let Some(options) = feed_options(config) else {
        return ExitCode::FAILURE;
    };
    let snapshot = match validate(dir) {
        Ok(snapshot) => snapshot,
        Err(issues) => return reject(dir, &issues),
    };
    if options.index == IndexKind::Exact {
        eprintln!(
            "note: [feed] index = \"exact\": serve does not use {} under these options",
            files::POSTS_INDEX
        );
    }
    let params = options.hnsw_params();
    let started = Instant::now();
    let pools = Pools::of(&snapshot.posts);
    let retriever = Retriever::build(
        &snapshot.post_vectors,
        &pools,
        snapshot.metric(),
        // The builder the options choose; "exact" stores the default graph.
        match options.index {
            IndexKind::Exact => IndexKind::Hnsw,
            kind => kind,
        },
        params,
    );
    let retriever = match retriever {
        Ok(retriever) => retriever,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let index = retriever.hnsw().expect("built as HNSW");
    println!(
        "indexed {} organic posts in {:.1} s (max_connections {}, ef_construction {})",
        thousands(retriever.organic_len()),
        started.elapsed().as_secs_f64(),
        params.max_connections,
        params.ef_construction
    );
    let path = dir.join(files::POSTS_INDEX);
    if let Err(e) = write_index(index, &path, snapshot.posts_sha256()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // The users' graph too, when they are many enough to have one.
    if snapshot.users.len() <= EXACT_USER_POOL {
        println!(
            "{} users: searched exactly, no {} needed",
            thousands(snapshot.users.len()),
            files::USERS_INDEX
        );
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let users = match UserIndex::load(&snapshot, IndexKind::Hnsw, params, options.users, None) {
        Ok(users) => users,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "indexed {} users in {:.1} s",
        thousands(snapshot.users.len()),
        started.elapsed().as_secs_f64()
    );
    let graph = users
        .graph()
        .expect("more users than the exact pool have a graph");
    match write_index(
        graph,
        &dir.join(files::USERS_INDEX),
        snapshot.users_sha256(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Stores `index` at `path`, bound to the matrix file whose sha256 is `sha256`, and says so.
fn write_index(
    index: &FlatHnswIndex,
    path: &Path,
    sha256: Option<&str>,
) -> Result<(), StoredIndexError> {
    let started = Instant::now();
    let size = index.write_to(path, sha256.unwrap_or_default())?;
    println!(
        "wrote {} ({} bytes) in {:.1} s",
        path.display(),
        thousands(usize::try_from(size).unwrap_or(usize::MAX)),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn reload(args: ReloadArgs) -> ExitCode {
    let Ok(token) = std::env::var("FEEDRANK_ADMIN_TOKEN") else {
        eprintln!("error: set FEEDRANK_ADMIN_TOKEN to the service's admin token");
        return ExitCode::FAILURE;
    };
    let (route, body) = match &args.path {
        Some(path) => (
            "/admin/snapshots/reload",
            serde_json::json!({ "path": path }).to_string(),
        ),
        None => ("/admin/snapshots/rollback", String::new()),
    };
    match admin_request(args.addr, route, &token, &body) {
        Ok((200, answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok((status, answer)) => {
            eprintln!("error: the service answered {status}: {answer}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.addr);
            ExitCode::FAILURE
        }
    }
}

/// One `POST` to the admin API over plain HTTP/1.1: the status and the body. A reload of a
/// large snapshot takes as long as loading it, so there is no read timeout.
fn admin_request(
    addr: std::net::SocketAddr,
    route: &str,
    token: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    write!(
        stream,
        "POST {route} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, answer) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, answer.to_string()))
}

fn write_demo(args: DemoArgs) -> ExitCode {
    if !args.force && dir_has_entries(&args.out) {
        eprintln!(
            "error: --out {}: directory is not empty; pass --force to overwrite",
            args.out.display()
        );
        return ExitCode::FAILURE;
    }
    let config = DemoConfig {
        posts: args.posts,
        users: args.users,
        seed: args.seed,
        dim: args.dim,
    };
    let started = Instant::now();
    let snapshot = match demo::generate(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = snapshot.write_to(&args.out) {
        eprintln!("error: writing {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote demo world {} ({} posts, {} users, {} hashtags, dim {}) to {} in {:.1} s",
        snapshot.model_version(),
        snapshot.posts.len(),
        snapshot.users.len(),
        snapshot.hashtags.len(),
        snapshot.dim(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match ServeConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => ServeConfig::default(),
    };
    if let Some(dir) = args.snapshot {
        config.snapshot = Some(dir);
    }
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(dir) = args.models_dir {
        config.models_dir = Some(dir);
    }
    // The token from the environment only: a flag would show it in the process list.
    if let Ok(token) = std::env::var("FEEDRANK_ADMIN_TOKEN") {
        config.admin_token = Some(token);
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_service(config))
}

/// Opens the write-ahead log in `data_dir` and replays it onto `model`; logs why not.
fn open_live(
    model: Arc<Model>,
    data_dir: &Path,
    options: LiveOptions,
    profiles: Arc<Profiles>,
) -> Result<Live, ()> {
    let started = Instant::now();
    match Live::open(model, data_dir, options, profiles) {
        Ok((live, replayed)) => {
            tracing::info!(
                data_dir = %data_dir.display(),
                batches = replayed.batches,
                events = replayed.events,
                posts = replayed.posts,
                truncated_bytes = replayed.truncated_bytes.unwrap_or(0),
                users = live.users(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
            Ok(live)
        }
        Err(e) => {
            tracing::error!(data_dir = %data_dir.display(), error = %e, "cannot open the write-ahead log");
            Err(())
        }
    }
}

async fn run_service(config: ServeConfig) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let dir = config.snapshot_dir();
    let models_dir = match &config.models_dir {
        Some(dir) => dir.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let lifecycle = match Lifecycle::new(&models_dir, config.feed) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve");
            return ExitCode::FAILURE;
        }
    };
    if config.admin_token.as_deref().is_none_or(str::is_empty) {
        tracing::info!("admin routes disabled: no admin token configured");
    }
    let state = AppState::with_admin(
        Duration::from_millis(config.request_timeout_ms),
        config.max_profiles,
        Arc::clone(&lifecycle),
        config.admin_token.as_deref(),
    );
    let reloads = Arc::clone(&lifecycle);
    let addr = listener.local_addr().unwrap_or(config.addr);
    let data_dir = config.data_dir.clone();
    tracing::info!(
        addr = %addr,
        snapshot = %dir.display(),
        data_dir = %data_dir.display(),
        "listening; loading snapshot"
    );

    // Load off the runtime: /healthz answers at once, /readyz turns 200 when the model serves.
    // A load that fails, or panics, stops the service: serving nothing forever helps nobody.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let loading_state = Arc::clone(&state);
    let options = config.feed;
    let live_options = config.live;
    let profiles = Arc::clone(state.profiles());
    tokio::spawn(async move {
        let load_dir = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let model = Arc::new(Model::load(&load_dir, options).map_err(|e| {
                report_load_failure(&load_dir, &e);
            })?);
            let live = open_live(model, &data_dir, live_options, profiles)?;
            lifecycle.record(&load_dir, live.model(), started.elapsed());
            Ok(live)
        })
        .await;
        match loaded {
            Ok(Ok(live)) => {
                tracing::info!(model_version = live.model().model_version(), "ready");
                loading_state.serve_live(Arc::new(live));
                return;
            }
            Ok(Err(())) => {}
            Err(panic) => tracing::error!(snapshot = %dir.display(), "loading panicked: {panic}"),
        }
        let _ = failed_tx.send(());
    });

    tokio::spawn(watch_reloads(Arc::clone(&state), reloads));

    let load_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&load_failed);
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutting down"),
            Ok(()) = failed_rx => {
                tracing::error!("cannot serve: the snapshot failed to load");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    if let Err(e) = api::serve(listener, state, shutdown).await {
        tracing::error!(error = %e, "server error");
        return ExitCode::FAILURE;
    }
    if load_failed.load(std::sync::atomic::Ordering::SeqCst) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The file in the models directory naming the snapshot to serve (a path relative to it).
const CURRENT_FILE: &str = "CURRENT";

/// Reloads on SIGHUP (the snapshot `CURRENT` names, else the serving one again), and when
/// the contents of `CURRENT` change (checked every 2 s). A reload that fails is logged and
/// the serving model stays.
async fn watch_reloads(state: Arc<AppState>, lifecycle: Arc<Lifecycle>) {
    let pointer = lifecycle.models_dir().join(CURRENT_FILE);
    let read_pointer = move || {
        std::fs::read_to_string(&pointer)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut last = read_pointer();
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<bool>();
        let target = tokio::select! {
            true = hup => {
                tracing::info!("SIGHUP: reloading");
                read_pointer().or_else(|| lifecycle.status().0.map(|info| info.path))
            }
            _ = tick.tick() => {
                let now = read_pointer();
                if now.is_none() || now == last {
                    continue;
                }
                tracing::info!(pointer = now.as_deref().unwrap_or(""), "CURRENT changed: reloading");
                now
            }
        };
        last = read_pointer();
        let Some(path) = target else { continue };
        // Before the first load finishes there is nothing to replace.
        if state.model().is_none() {
            continue;
        }
        let lifecycle = Arc::clone(&lifecycle);
        let installer = Arc::clone(&state);
        let result = tokio::task::spawn_blocking(move || {
            lifecycle.reload(&path, installer.live(), |served| installer.install(served))
        })
        .await;
        if let Ok(outcome) = &result {
            api::record_reload(&state, outcome);
        }
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reload failed; the serving model stays"),
            Err(e) => tracing::error!(error = %e, "reload panicked; the serving model stays"),
        }
    }
}

fn report_load_failure(dir: &Path, error: &FeedError) {
    match error {
        FeedError::Snapshot(e) => {
            for issue in e.issues() {
                tracing::error!(snapshot = %dir.display(), "{issue}");
            }
        }
        other => tracing::error!(snapshot = %dir.display(), "{other}"),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hnsw_rs=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
