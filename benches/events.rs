//! Event ingestion with durability on: `Live::ingest` (validation, the write-ahead log with
//! fsync and group commit, then the effects), from one thread and from several at once, on a
//! demo world of 10,000 posts; then the memory that 1,000,000 events add. Then publishing
//! (`Live::publish`): posts/s with fsync on, the memory per published post, and a feed
//! request with 10,000 posts published since the snapshot.
//!
//! `cargo bench --bench events`. The log is written under `target/bench-events` (a real disk
//! in the usual checkout, where fsync costs what it costs; a tmpfs would hide it).
//! FEEDRANK_BENCH_EVENTS_DIR=DIR puts it elsewhere. FEEDRANK_BENCH_NO_AUDIENCE=1 counts no
//! author as a small creator, so publishing searches no audience (to see what that costs).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

use feedrank::demo::{self, DemoConfig};
use feedrank::feed::{FeedOptions, FeedRequest, Model};
use feedrank::live::{Live, LiveOptions};
use feedrank::profiles::Profiles;

/// The service's allocator, counting the bytes in use: resident memory would not show what
/// one phase adds, as the allocator keeps and reuses what earlier phases freed.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size, Ordering::Relaxed);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KINDS: [&str; 8] = [
    "impression",
    "view",
    "like",
    "save",
    "comment",
    "share",
    "hide",
    "report",
];

fn data_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("FEEDRANK_BENCH_EVENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-events"));
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn profiles() -> Arc<Profiles> {
    Arc::new(Profiles::new(1))
}

fn model() -> Arc<Model> {
    let snapshot = demo::generate(&DemoConfig {
        posts: 10_000,
        users: 1_000,
        ..DemoConfig::default()
    })
    .expect("demo world");
    let mut options = FeedOptions::default();
    // FEEDRANK_BENCH_NO_AUDIENCE=1: no audience searched for new posts (to see its cost).
    if std::env::var_os("FEEDRANK_BENCH_NO_AUDIENCE").is_some() {
        options.audience.small_creator_max_views = 0;
    }
    Arc::new(Model::build(snapshot, options).expect("model"))
}

/// A well-mixed hash of `i` (splitmix64's finaliser), so that users, posts and kinds of a
/// stream are not correlated.
fn mix(i: usize, salt: u64) -> usize {
    let mut z = (i as u64)
        .wrapping_add(salt)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

/// The `i`-th event of a stream over `users` users: mostly impressions and views, as in
/// traffic, with every other kind present.
fn event(posts: &[String], users: usize, i: usize) -> Value {
    let kind = match mix(i, 1) % 20 {
        0 => KINDS[2 + mix(i, 2) % 6],
        1..=9 => "impression",
        _ => "view",
    };
    json!({
        "user_id": format!("user-{}", mix(i, 3) % users),
        "post_id": posts[mix(i, 4) % posts.len()],
        "type": kind,
        "ts": 1_700_000_000 + i as i64,
    })
}

fn batch(posts: &[String], users: usize, from: usize, size: usize) -> Vec<Value> {
    (from..from + size)
        .map(|i| event(posts, users, i))
        .collect()
}

fn bench_ingest(c: &mut Criterion) {
    let model = model();
    let posts: Vec<String> = model
        .snapshot()
        .posts
        .iter()
        .map(|p| p.id.clone())
        .collect();

    // Throughput, fsync on: one writer at a time, then several sharing fsyncs.
    for (threads, batch_size) in [(1, 1), (1, 100), (8, 1), (8, 100)] {
        let dir = data_dir(&format!("throughput-{threads}x{batch_size}"));
        let (live, _) =
            Live::open(model.clone(), &dir, LiveOptions::default(), profiles()).expect("live");
        let live = Arc::new(live);
        let batches_per_thread = if batch_size == 1 { 3_000 } else { 500 };
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (live, posts) = (&live, &posts);
                s.spawn(move || {
                    for b in 0..batches_per_thread {
                        let from = (t * batches_per_thread + b) * batch_size;
                        let outcome = live.ingest(batch(posts, 10_000, from, batch_size)).unwrap();
                        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
                    }
                });
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        let events = threads * batches_per_thread * batch_size;
        let stats = live.wal_stats();
        eprintln!(
            "{threads} thread(s), batches of {batch_size}, fsync on: {:.0} events/s, {:.0} batches/s \
             ({events} events in {elapsed:.2} s; {} fsyncs for {} batches)",
            events as f64 / elapsed,
            (threads * batches_per_thread) as f64 / elapsed,
            stats.syncs,
            stats.appends,
        );
    }

    // Memory: 1,000,000 events over 10,000 users, then over 100,000 (the default bound).
    for users in [10_000, 100_000] {
        let dir = data_dir(&format!("memory-{users}"));
        let options = LiveOptions {
            sync: false,
            ..LiveOptions::default()
        };
        let (live, _) = Live::open(model.clone(), &dir, options, profiles()).expect("live");
        let before = IN_USE.load(Ordering::Relaxed);
        let started = Instant::now();
        for from in (0..1_000_000).step_by(1_000) {
            live.ingest(batch(&posts, users, from, 1_000)).unwrap();
        }
        let after = IN_USE.load(Ordering::Relaxed);
        let summary = live.summary("user-0").expect("user-0 has events");
        eprintln!(
            "1,000,000 events over {users} users (fsync off): heap in use +{:.1} MiB, \
             {} users with live state (one of them: {} seen, {} hidden kept of {} events), \
             {:.0} events/s, log {:.1} MiB",
            (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
            live.users(),
            summary.seen,
            summary.hidden,
            summary.events,
            1e6 / started.elapsed().as_secs_f64(),
            live.wal_stats().bytes as f64 / (1 << 20) as f64,
        );
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }

    bench_publish(c, &model);

    let dir = data_dir("criterion");
    let (live, _) =
        Live::open(model.clone(), &dir, LiveOptions::default(), profiles()).expect("live");
    let mut group = c.benchmark_group("ingest");
    group.sample_size(20);
    let mut from = 0;
    group.bench_function("batch_of_100_fsync", |b| {
        b.iter(|| {
            from += 100;
            black_box(live.ingest(batch(&posts, 10_000, from, 100)).unwrap())
        })
    });
    group.finish();
}

/// The `i`-th post of a publishing stream: an embedding near a snapshot post's (so it lands
/// among real neighbours), a few hashtags, newer than the snapshot.
fn new_post(model: &Model, i: usize, salt: &str) -> Value {
    let source = mix(i, 7) % model.snapshot().posts.len();
    let base = model.post_vector(source as u32);
    let embedding: Vec<f32> = base
        .iter()
        .enumerate()
        .map(|(d, v)| v + 0.05 * ((mix(i * 131 + d, 8) % 1000) as f32 / 1000.0 - 0.5))
        .collect();
    let post = &model.snapshot().posts[source];
    json!({
        "id": format!("pub-{salt}-{i}"),
        "author": format!("creator-{}", mix(i, 9) % 5_000),
        "lang": post.lang,
        "hashtags": post.hashtags,
        "kind": if mix(i, 10).is_multiple_of(10) { "ad" } else { "organic" },
        "created_at": model.now() + 60 + i as i64,
        "embedding": embedding,
    })
}

fn bench_publish(c: &mut Criterion, shared: &Arc<Model>) {
    // Throughput, fsync on. Each run on its own model: published posts stay in a model.
    for (threads, batch_size, per_thread) in [(1, 1, 1_000), (1, 100, 50), (4, 1, 500)] {
        let model = model();
        let dir = data_dir(&format!("publish-{threads}x{batch_size}"));
        let (live, _) =
            Live::open(model.clone(), &dir, LiveOptions::default(), profiles()).expect("live");
        let posts: Vec<Vec<Value>> = (0..threads * per_thread)
            .map(|b| {
                (0..batch_size)
                    .map(|j| new_post(&model, b * batch_size + j, "t"))
                    .collect()
            })
            .collect();
        let started = Instant::now();
        std::thread::scope(|s| {
            for chunk in posts.chunks(per_thread) {
                let live = &live;
                s.spawn(move || {
                    for batch in chunk {
                        live.publish(batch.clone()).unwrap();
                    }
                });
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        let n = threads * per_thread * batch_size;
        eprintln!(
            "publish: {threads} thread(s), batches of {batch_size}, fsync on: {:.0} posts/s \
             ({n} posts in {elapsed:.2} s)",
            n as f64 / elapsed,
        );
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Memory per published post: 100,000 posts (fsync off), the heap they add (records,
    // vectors, ids, the live indexes; sealing builds graphs of them in the background).
    {
        let model = model();
        let dir = data_dir("publish-memory");
        let options = LiveOptions {
            sync: false,
            ..LiveOptions::default()
        };
        let (live, _) = Live::open(model.clone(), &dir, options, profiles()).expect("live");
        let n = 100_000;
        let before = IN_USE.load(Ordering::Relaxed);
        let started = Instant::now();
        for from in (0..n).step_by(100) {
            let batch: Vec<Value> = (from..from + 100)
                .map(|i| new_post(&model, i, "m"))
                .collect();
            live.publish(batch).unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = IN_USE.load(Ordering::Relaxed);
        eprintln!(
            "publish: {n} posts at {} dimensions (fsync off): {:.0} posts/s, heap in use \
             +{:.1} MiB ({:.0} bytes a post), log {:.1} MiB",
            model.snapshot().dim(),
            n as f64 / elapsed,
            (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
            (after.saturating_sub(before)) as f64 / n as f64,
            live.wal_stats().bytes as f64 / (1 << 20) as f64,
        );
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // A known user's feed, before and after 10,000 posts are published (below the seal
    // threshold: the delta is scanned exactly beside the graph).
    let user = shared.snapshot().users[7].id.clone();
    let request = FeedRequest {
        user_id: &user,
        limit: 20,
        cursor: None,
    };
    let mut group = c.benchmark_group("publish");
    group.sample_size(50);
    group.bench_function("feed_known_user_none_published", |b| {
        b.iter(|| black_box(shared.feed(&request).unwrap().items.len()))
    });
    let published = model();
    let dir = data_dir("publish-feed");
    let options = LiveOptions {
        sync: false,
        ..LiveOptions::default()
    };
    let (live, _) = Live::open(published.clone(), &dir, options, profiles()).expect("live");
    for from in (0..10_000).step_by(100) {
        let batch: Vec<Value> = (from..from + 100)
            .map(|i| new_post(&published, i, "f"))
            .collect();
        live.publish(batch).unwrap();
    }
    group.bench_function("feed_known_user_10k_published", |b| {
        b.iter(|| black_box(published.feed(&request).unwrap().items.len()))
    });
    group.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
