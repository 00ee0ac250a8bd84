//! Whole feed requests in-process at 100,000 posts (candidate sources with HNSW retrieval,
//! hydration and scoring, ads, the selector, page assembly and JSON encoding), for known users
//! (first page, and the last page a cursor reaches, which arranges the whole `max_depth`) and
//! for users the snapshot does not know and for newcomers known only by the hashtags they
//! picked, next to the retrieval stage alone for the same users, and the policy stage alone;
//! and hashtag recommendations for a newcomer and for a known user. A known user's request is
//! also measured recording its stage times into a metrics registry (`known_user_with_metrics`,
//! and in turns with the plain request), and the registry's per-request recording alone
//! (`metrics/`).
//!
//! Besides criterion's estimates, prints p50/p90/p99 over individually timed requests, since
//! a feed's latency budget is about its tail.
//!
//! `cargo bench --bench feed` (FEEDRANK_BENCH_POSTS overrides the corpus size, e.g. 1000000).
//! FEEDRANK_BENCH_SNAPSHOT=DIR loads a snapshot directory instead of generating a world, with
//! its stored index when it has a matching one: at a million posts that saves building the
//! graph (`feedrank demo --out DIR --posts 1000000 --users 100000`, then
//! `feedrank snapshot index DIR`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use feedrank::demo::{self, DemoConfig};
use feedrank::feed::{DEFAULT_HASHTAG_LIMIT, FeedOptions, FeedRequest, Model, RequestContext};
use feedrank::metrics::{HTTP_BUCKETS, Histogram, Metrics};
use feedrank::policy::{
    self, AdCandidate, CandidateSet, Lang, OrganicCandidate, PolicyConfig, Scored, UserLanguages,
};
use feedrank::profiles::{Profile, ProfileInput};
use feedrank::snapshot::{NewPost, PostKind};

// The allocator the service runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn posts() -> usize {
    std::env::var("FEEDRANK_BENCH_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// A p50/p90/p99 summary, and the median.
fn percentiles(mut micros: Vec<f64>) -> (String, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    let summary = format!(
        "p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs (n = {})",
        at(0.5),
        at(0.9),
        at(0.99),
        micros.len()
    );
    (summary, at(0.5))
}

/// The model to measure: the snapshot directory named by FEEDRANK_BENCH_SNAPSHOT, or a
/// generated demo world of FEEDRANK_BENCH_POSTS posts.
fn model() -> Model {
    let started = Instant::now();
    let model = match std::env::var_os("FEEDRANK_BENCH_SNAPSHOT") {
        Some(dir) => Model::load(dir.as_ref(), FeedOptions::default()).expect("snapshot"),
        None => {
            let posts = posts();
            let config = DemoConfig {
                posts,
                users: (posts / 10).clamp(1_000, 100_000),
                ..DemoConfig::default()
            };
            let snapshot = demo::generate(&config).expect("demo world");
            Model::build(snapshot, FeedOptions::default()).expect("model")
        }
    };
    eprintln!(
        "{} posts: model ready in {:.1} s (organic index: {:?}; ad index of {} ads built in {:.1} s)",
        model.snapshot().posts.len(),
        started.elapsed().as_secs_f64(),
        model.index_origin(),
        model.retriever().ads_len(),
        model.retriever().ads_build_time().as_secs_f64()
    );
    model
}

fn bench_feed(c: &mut Criterion) {
    let model = model();
    let posts = model.snapshot().posts.len();
    let users: Vec<String> = model
        .snapshot()
        .users
        .iter()
        .map(|u| u.id.clone())
        .collect();

    let serve_page = |user: &str, limit: usize, cursor: Option<&str>| {
        let request = FeedRequest {
            user_id: user,
            limit,
            cursor,
        };
        let page = model.feed(&request).expect("feed");
        serde_json::to_vec(&page).expect("json")
    };
    let serve = |user: &str| serve_page(user, 20, None);
    // The same request recording its stage times and page into a registry, as the HTTP
    // handler does.
    let metrics = Metrics::new();
    let serve_measured = |user: &str| {
        let request = FeedRequest {
            user_id: user,
            limit: 20,
            cursor: None,
        };
        let context = RequestContext {
            metrics: Some(metrics.feed()),
            ..RequestContext::default()
        };
        let page = model.feed_with(&request, context).expect("feed");
        serde_json::to_vec(&page).expect("json")
    };
    // Cursors to the last page (offset max_depth − 100), for the first 200 users.
    let deep: Vec<(String, String)> = users
        .iter()
        .take(200)
        .filter_map(|user| {
            let mut cursor: Option<String> = None;
            for _ in 0..(model.options().max_depth / 100).saturating_sub(1) {
                let request = FeedRequest {
                    user_id: user,
                    limit: 100,
                    cursor: cursor.as_deref(),
                };
                cursor = Some(model.feed(&request).expect("feed").next_cursor?);
            }
            Some((user.clone(), cursor?))
        })
        .collect();

    let candidates = model.options().candidates;
    let retrieve = |user: &str| {
        let query = model.user_vector(user).expect("known user");
        model.retriever().similar(query, candidates)
    };
    // As many ads as a request fetches for the default policy (every ad slot to max_depth,
    // and five more).
    let ads_fetched = (model.options().max_depth - 3) / 11 + 1 + 5;
    let retrieve_ads = |user: &str| {
        let query = model.user_vector(user).expect("known user");
        model.retriever().ads(query, ads_fetched)
    };
    // Retrieval alone and the whole request are timed in turns (on different users), so that
    // both see the same machine: on a shared VM the speed drifts by tens of percent between
    // one loop of 2,000 requests and the next, which a ratio of two separate loops inherits.
    let mut alone = Vec::with_capacity(2_000);
    let mut whole = Vec::with_capacity(2_000);
    let half = users.len() / 2;
    for i in 0..2_000 {
        let t = Instant::now();
        drop(black_box(retrieve(&users[i % users.len()])));
        alone.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        drop(black_box(serve(&users[(i + half) % users.len()])));
        whole.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (summary, alone_median) = percentiles(alone);
    eprintln!("{posts} posts, retrieval alone, known user: {summary}");
    let (summary, whole_median) = percentiles(whole);
    eprintln!("{posts} posts, whole feed request, known user: {summary}");
    eprintln!(
        "{posts} posts: whole request / retrieval alone, medians: {:.2}",
        whole_median / alone_median
    );
    // With and without metrics, in turns on the same users (each once of each per round).
    let mut without = Vec::with_capacity(2_000);
    let mut with = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let user = &users[i % users.len()];
        let (first, second) = if i % 2 == 0 {
            (&mut without, &mut with)
        } else {
            (&mut with, &mut without)
        };
        for (samples, measured) in [(first, i % 2 == 1), (second, i % 2 == 0)] {
            let t = Instant::now();
            if measured {
                drop(black_box(serve_measured(user)));
            } else {
                drop(black_box(serve(user)));
            }
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let (summary, without_median) = percentiles(without);
    eprintln!("{posts} posts, whole feed request, known user, no metrics: {summary}");
    let (summary, with_median) = percentiles(with);
    eprintln!("{posts} posts, whole feed request, known user, stage metrics: {summary}");
    eprintln!(
        "{posts} posts: with / without stage metrics, medians: {:.3}",
        with_median / without_median
    );
    // Newcomers who onboarded with the hashtags a snapshot user follows (those who follow any).
    let profiles: Vec<Profile> = model
        .snapshot()
        .users
        .iter()
        .filter(|u| !u.follows.is_empty())
        .take(200)
        .map(|u| {
            Profile::from_input(ProfileInput {
                langs: vec!["en".into()],
                follows: u.follows.clone(),
            })
            .expect("profile")
        })
        .collect();
    let serve_onboarded = |i: usize| {
        let request = FeedRequest {
            user_id: "onboarded",
            limit: 20,
            cursor: None,
        };
        let context = RequestContext {
            profile: Some(&profiles[i % profiles.len()]),
            ..RequestContext::default()
        };
        let page = model.feed_with(&request, context).expect("feed");
        serde_json::to_vec(&page).expect("json")
    };
    let hashtags_for = |user: &str, lang: &str| {
        let page = model
            .recommend_hashtags(user, None, None, Some(lang), DEFAULT_HASHTAG_LIMIT)
            .expect("hashtags");
        serde_json::to_vec(&page).expect("json")
    };
    for (label, kind) in [
        ("whole feed request, unknown user", 2),
        ("whole feed request, known user, last page of 100", 3),
        ("ad retrieval alone, known user", 4),
        (
            "whole feed request, onboarded newcomer (picked hashtags)",
            5,
        ),
        ("10 hashtags for a newcomer (en)", 6),
        ("10 hashtags for a known user", 7),
    ] {
        if kind == 3 && deep.is_empty() {
            continue;
        }
        let mut micros = Vec::with_capacity(2_000);
        for i in 0..2_000 {
            let t = Instant::now();
            match kind {
                2 => drop(black_box(serve(&format!("new_{i}")))),
                4 => drop(black_box(retrieve_ads(&users[i % users.len()]))),
                5 => drop(black_box(serve_onboarded(i))),
                6 => drop(black_box(hashtags_for(&format!("new_{i}"), "en"))),
                7 => drop(black_box(hashtags_for(&users[i % users.len()], "en"))),
                _ => {
                    let (user, cursor) = &deep[i % deep.len()];
                    drop(black_box(serve_page(user, 100, Some(cursor))))
                }
            }
            micros.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let (summary, _) = percentiles(micros);
        eprintln!("{posts} posts, {label}: {summary}");
    }

    // The sources that read live state: a second model of the same snapshot in which every
    // user has saved 16 posts (the lookalike source searches the user index and merges the
    // neighbours' saves) and 500 new posts of small creators are on offer (the audience
    // source checks each against the viewer). Timed in turns with the first model, where
    // both sources find nothing to do.
    // FEEDRANK_BENCH_SOURCES=lookalike or =audience keeps only that one on.
    let only = std::env::var("FEEDRANK_BENCH_SOURCES").unwrap_or_default();
    let mut options = *model.options();
    if only == "lookalike" {
        options.audience.candidates = 0;
    } else if only == "audience" {
        options.users.lookalike_candidates = 0;
    }
    let sourced = Model::build(model.snapshot().clone(), options).expect("model with live sources");
    let organic: Vec<u32> = (0..posts as u32)
        .filter(|&row| model.post(row).kind == PostKind::Organic)
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for user in &users {
        for _ in 0..16 {
            let row = organic[(next() % organic.len() as u64) as usize];
            sourced.record_user_engagement(user, row, 1.0);
        }
    }
    let fresh: Vec<NewPost> = (0..500)
        .map(|i| {
            let row = organic[(next() % organic.len() as u64) as usize];
            let mut post = model.post(row).clone();
            post.id = format!("new_post_{i}");
            post.author = format!("new_creator_{i}");
            post.created_at = model.now() + 60;
            post.stats = Default::default();
            NewPost {
                post,
                vector: model.post_vector(row).to_vec(),
            }
        })
        .collect();
    // Publishing, as `POST /v1/posts` does after logging: each new post of a small creator
    // searches its audience (its `audience_size` nearest users) in the user index.
    let started = Instant::now();
    for batch in fresh.chunks(100) {
        sourced.publish(batch.to_vec());
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{posts} posts: {} users with 16 saves each; 500 posts of new creators published in \
         batches of 100 in {:.1} ms ({:.0} posts/s, audiences of {} users searched), {} on offer",
        users.len(),
        elapsed * 1e3,
        500.0 / elapsed,
        model.options().audience.audience_size,
        sourced.audience().offered()
    );
    let serve_sourced = |user: &str| {
        let request = FeedRequest {
            user_id: user,
            limit: 20,
            cursor: None,
        };
        let page = sourced.feed(&request).expect("feed");
        serde_json::to_vec(&page).expect("json")
    };
    let mut without = Vec::with_capacity(2_000);
    let mut with = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let user = &users[(i * 7) % users.len()];
        let t = Instant::now();
        drop(black_box(serve(user)));
        without.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        drop(black_box(serve_sourced(user)));
        with.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (summary, without_median) = percentiles(without);
    eprintln!("{posts} posts, whole feed request, known user, live sources idle: {summary}");
    let (summary, with_median) = percentiles(with);
    eprintln!(
        "{posts} posts, whole feed request, known user, live sources on ({}): {summary}",
        if only.is_empty() {
            "lookalike and audience"
        } else {
            &only
        }
    );
    eprintln!(
        "{posts} posts: with / without the live sources, medians: {:.2}",
        with_median / without_median
    );

    let mut group = c.benchmark_group(format!("feed_request_{posts}"));
    group.sample_size(50);
    let mut i = 0;
    group.bench_function("known_user_live_sources", |b| {
        b.iter(|| {
            i += 1;
            black_box(serve_sourced(&users[i % users.len()]))
        })
    });
    let mut i = 0;
    group.bench_function("known_user", |b| {
        b.iter(|| {
            i += 1;
            black_box(serve(&users[i % users.len()]))
        })
    });
    let mut i = 0;
    group.bench_function("known_user_with_metrics", |b| {
        b.iter(|| {
            i += 1;
            black_box(serve_measured(&users[i % users.len()]))
        })
    });
    group.bench_function("unknown_user", |b| {
        b.iter(|| black_box(serve("someone_new")))
    });
    let mut i = 0;
    group.bench_function("onboarded_user", |b| {
        b.iter(|| {
            i += 1;
            black_box(serve_onboarded(i))
        })
    });
    group.bench_function("hashtags_newcomer", |b| {
        b.iter(|| black_box(hashtags_for("someone_new", "en")))
    });
    let mut i = 0;
    group.bench_function("retrieval_alone", |b| {
        b.iter(|| {
            i += 1;
            black_box(retrieve(&users[i % users.len()]))
        })
    });
    group.finish();
}

/// The policy stage on its own, over plain data: ordering a personal feed's candidates by
/// score, interleaving a ranking by language, and the selector arranging candidates and ads
/// into pages.
fn bench_policy(c: &mut Criterion) {
    // Scores and languages from a fixed LCG: no dependence on a model.
    let mut state = 42u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let candidates: Vec<Scored> = (0..200)
        .map(|row| Scored {
            row,
            score: next() as f32 / u32::MAX as f32,
        })
        .collect();
    let langs: Vec<usize> = (0..200).map(|_| (next() % 3) as usize).collect();
    let mut group = c.benchmark_group("policy");
    group.bench_function("order_200_by_score", |b| {
        b.iter(|| {
            let mut ranked = candidates.clone();
            policy::order_by_score(black_box(&mut ranked));
            ranked
        })
    });
    let mut ranked = candidates.clone();
    policy::order_by_score(&mut ranked);
    group.bench_function("interleave_200_by_language", |b| {
        b.iter(|| policy::interleave_by_language(black_box(&ranked), |row| langs[row as usize]))
    });

    // The selector: the same 200 candidates (40 authors, three languages one of which is
    // `mixed`, three hashtags of 50 each, one in ten sponsored) and 20 ads, for a user who
    // lists one language, arranged into 5 pages of 20. Embeddings of 64 dimensions,
    // normalised, for the near-duplicate rule.
    const DIM: usize = 64;
    let mut vectors: Vec<f32> = (0..200 * DIM)
        .map(|_| next() as f32 / u32::MAX as f32 - 0.5)
        .collect();
    for row in vectors.chunks_mut(DIM) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let mut organic = CandidateSet::with_capacity(200, 600);
    for s in &candidates {
        let lang = match langs[s.row as usize] {
            0 => Lang::Mixed,
            id => Lang::Id(id as u16),
        };
        let candidate = OrganicCandidate {
            row: s.row,
            score: s.score,
            author: next() % 40,
            lang,
            sponsored: next() % 10 == 0,
            exploring: false,
        };
        organic.push(candidate, &[next() % 50, next() % 50, next() % 50]);
    }
    let ads: Vec<AdCandidate> = (0..20)
        .map(|i| AdCandidate {
            row: 1_000 + i,
            relevance: next() as f32 / u32::MAX as f32,
            score: next() as f32 / u32::MAX as f32,
        })
        .collect();
    let listed = [Lang::Id(1)];
    let user = UserLanguages {
        listed: &listed,
        engaged: &[],
    };
    let similarity = |a: u32, b: u32| {
        let (a, b) = (a as usize * DIM, b as usize * DIM);
        dot(&vectors[a..a + DIM], &vectors[b..b + DIM])
    };
    let config = PolicyConfig::default();
    group.bench_function(
        "arrange_200_candidates_and_20_ads_into_5_pages_of_20",
        |b| {
            b.iter(|| {
                policy::arrange(black_box(&organic), &ads, &user, similarity, &config, 100)
                    .expect("valid inputs")
            })
        },
    );
    group.finish();
}

/// A dot product in eight lanes, which the compiler vectorises (as the service's own kernel
/// is), so that the selector is not measured with an unusually slow similarity.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum()
}

/// The metrics registry's hot path: what the HTTP middleware records per request (the route
/// template's slot, the request counter, the duration histogram), with the feed route
/// interned last of a dozen (the longest lookup), and one histogram observation.
fn bench_metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    let feed = "/v1/users/{user_id}/feed";
    for i in 0..11 {
        metrics.record_request(Some(&format!("/route/{i}")), "GET", 200, Duration::ZERO);
    }
    metrics.record_request(Some(feed), "GET", 200, Duration::ZERO);
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_request", |b| {
        b.iter(|| {
            metrics.record_request(
                black_box(Some(feed)),
                black_box("GET"),
                black_box(200),
                black_box(Duration::from_micros(300)),
            )
        })
    });
    let histogram = Histogram::seconds(HTTP_BUCKETS);
    group.bench_function("histogram_observe", |b| {
        b.iter(|| histogram.observe_duration(black_box(Duration::from_micros(300))))
    });
    group.finish();
}

criterion_group!(benches, bench_feed, bench_policy, bench_metrics);
criterion_main!(benches);
