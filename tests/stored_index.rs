//! A snapshot directory with a stored HNSW index (`posts.index`): `Model::load` uses it when it
//! fits the snapshot and the options, and builds the index when it does not, serving the same
//! feeds either way.

use std::collections::HashSet;
use std::path::Path;

use feedrank::candidates::{IndexKind, IndexOrigin};
use feedrank::demo::{self, DemoConfig};
use feedrank::feed::{FeedOptions, FeedRequest, Model};
use feedrank::snapshot::{self, files};

fn write_world(dir: &Path, seed: u64) {
    let world = demo::generate(&DemoConfig {
        posts: 3_000,
        users: 200,
        seed,
        dim: 32,
    })
    .unwrap();
    world.write_to(dir).unwrap();
}

fn exact() -> FeedOptions {
    FeedOptions {
        index: IndexKind::Exact,
        ..FeedOptions::default()
    }
}

/// Known users (the first `known` of the snapshot) and two it does not know.
fn users(model: &Model, known: usize) -> Vec<String> {
    let mut users: Vec<String> = model
        .snapshot()
        .users
        .iter()
        .take(known)
        .map(|u| u.id.clone())
        .collect();
    users.extend(["newcomer_1".to_string(), "newcomer_2".to_string()]);
    users
}

/// Every page of each user's feed, as (post id, score bits).
fn all_pages(model: &Model, users: &[String]) -> Vec<Vec<(String, u32)>> {
    let mut feeds = Vec::new();
    for user in users {
        let mut cursor: Option<String> = None;
        let mut feed = Vec::new();
        loop {
            let page = model
                .feed(&FeedRequest {
                    user_id: user,
                    limit: 100,
                    cursor: cursor.as_deref(),
                })
                .unwrap();
            feed.extend(
                page.items
                    .iter()
                    .map(|i| (i.post_id.to_string(), i.score.to_bits())),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        feeds.push(feed);
    }
    feeds
}

/// Share of `reference`'s first-page posts that `model` also puts on the first page.
fn first_page_overlap(model: &Model, reference: &Model, users: &[String]) -> f64 {
    let (mut shared, mut total) = (0usize, 0usize);
    for user in users {
        let request = FeedRequest {
            user_id: user,
            limit: 20,
            cursor: None,
        };
        let got: HashSet<&str> = model
            .feed(&request)
            .unwrap()
            .items
            .iter()
            .map(|i| i.post_id)
            .collect();
        let want = reference.feed(&request).unwrap();
        shared += want
            .items
            .iter()
            .filter(|i| got.contains(i.post_id))
            .count();
        total += want.items.len();
    }
    shared as f64 / total as f64
}

fn rejection(model: &Model) -> String {
    match model.index_origin() {
        IndexOrigin::Built {
            rejected: Some(reason),
            ..
        } => reason.clone(),
        other => panic!("expected a rejected stored index, got {other:?}"),
    }
}

#[test]
fn a_stored_index_is_loaded_and_serves_exactly_the_feeds_of_the_model_that_stored_it() {
    let dir = tempfile::tempdir().unwrap();
    write_world(dir.path(), 11);
    let built = Model::load(dir.path(), FeedOptions::default()).unwrap();
    assert!(
        matches!(
            built.index_origin(),
            IndexOrigin::Built { rejected: None, .. }
        ),
        "{:?}",
        built.index_origin()
    );
    let posts_sha256 = built.snapshot().posts_sha256().unwrap();
    built
        .retriever()
        .hnsw()
        .unwrap()
        .write_to(&dir.path().join(files::POSTS_INDEX), posts_sha256)
        .unwrap();

    let loaded = Model::load(dir.path(), FeedOptions::default()).unwrap();
    assert!(
        matches!(loaded.index_origin(), IndexOrigin::Loaded { .. }),
        "{:?}",
        loaded.index_origin()
    );
    let users = users(&built, 80);
    let feeds = all_pages(&built, &users);
    assert_eq!(all_pages(&loaded, &users), feeds);
    assert!(feeds.iter().all(|f| f.len() == 500), "every feed is full");

    // The search beam is an option of the service, not of the file.
    let wider = Model::load(
        dir.path(),
        FeedOptions {
            hnsw_ef_search: 300,
            ..FeedOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(wider.index_origin(), IndexOrigin::Loaded { .. }));
    assert_eq!(wider.retriever().hnsw().unwrap().ef_search(), 300);

    // Exact retrieval ignores the file; the loaded graph ranks like it.
    let exact = Model::load(dir.path(), exact()).unwrap();
    assert!(
        matches!(
            exact.index_origin(),
            IndexOrigin::Built { rejected: None, .. }
        ),
        "{:?}",
        exact.index_origin()
    );
    assert!(exact.retriever().hnsw().is_none());
    let overlap = first_page_overlap(&loaded, &exact, &users);
    assert!(overlap >= 0.95, "overlap with exact retrieval {overlap:.4}");
}

#[test]
fn a_stale_or_damaged_stored_index_is_rebuilt_and_feeds_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    write_world(dir.path(), 12);
    let path = dir.path().join(files::POSTS_INDEX);
    let exact = Model::load(dir.path(), exact()).unwrap();
    let users = users(&exact, 60);
    let non_personal = &users[users.len() - 2..];

    let check_rebuilt = |options: FeedOptions, reason: &str| {
        let model = Model::load(dir.path(), options).unwrap();
        let rejected = rejection(&model);
        assert!(rejected.contains(reason), "{rejected}");
        assert!(rejected.starts_with("posts.index: "), "{rejected}");
        let overlap = first_page_overlap(&model, &exact, &users);
        assert!(overlap >= 0.95, "{reason}: overlap {overlap:.4}");
        assert_eq!(
            all_pages(&model, non_personal),
            all_pages(&exact, non_personal)
        );
    };

    // Another snapshot's index, of the same size: its graph would answer nonsense here.
    let other = tempfile::tempdir().unwrap();
    write_world(other.path(), 13);
    let other_model = Model::load(other.path(), FeedOptions::default()).unwrap();
    let other_sha = other_model.snapshot().posts_sha256().unwrap();
    other_model
        .retriever()
        .hnsw()
        .unwrap()
        .write_to(&path, other_sha)
        .unwrap();
    check_rebuilt(
        FeedOptions::default(),
        &format!("built for a posts.npy with sha256 {other_sha}"),
    );

    // This snapshot's index, built with other graph parameters than the options ask for.
    let own = Model::load(dir.path(), FeedOptions::default()).unwrap();
    let own_sha = own.snapshot().posts_sha256().unwrap();
    own.retriever()
        .hnsw()
        .unwrap()
        .write_to(&path, own_sha)
        .unwrap();
    check_rebuilt(
        FeedOptions {
            hnsw_ef_construction: 100,
            ..FeedOptions::default()
        },
        "built for ef_construction 200, options ask for 100",
    );
    check_rebuilt(
        FeedOptions {
            hnsw_max_connections: 12,
            ..FeedOptions::default()
        },
        "built for max_connections 16, options ask for 12",
    );

    // Damaged: one byte flipped in the middle.
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    check_rebuilt(FeedOptions::default(), "checksum mismatch");

    // Not an index at all; the snapshot itself is still valid with it beside it.
    std::fs::write(&path, "not an index\n").unwrap();
    snapshot::load(dir.path()).expect("an extra posts.index does not affect validation");
    check_rebuilt(FeedOptions::default(), "bad magic");
}

/// The users' graph is stored beside the posts' (`users.index`, for more than
/// `EXACT_USER_POOL` users) and loaded when it fits, answering exactly as the built one; a
/// damaged file is refused with its reason and the graph built again.
#[test]
fn a_stored_user_index_is_loaded_when_it_fits_and_rebuilt_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let users = feedrank::candidates::EXACT_USER_POOL + 500;
    let world = demo::generate(&DemoConfig {
        posts: 500,
        users,
        seed: 5,
        dim: 16,
    })
    .unwrap();
    world.write_to(dir.path()).unwrap();
    let built = Model::load(dir.path(), FeedOptions::default()).unwrap();
    assert!(matches!(
        built.user_index().origin(),
        IndexOrigin::Built { rejected: None, .. }
    ));
    let snapshot = built.snapshot();
    let path = dir.path().join(files::USERS_INDEX);
    built
        .user_index()
        .graph()
        .expect("a graph above the exact pool")
        .write_to(&path, snapshot.users_sha256().unwrap())
        .unwrap();

    let loaded = Model::load(dir.path(), FeedOptions::default()).unwrap();
    assert!(matches!(
        loaded.user_index().origin(),
        IndexOrigin::Loaded { .. }
    ));
    for row in (0..users).step_by(97) {
        let query = snapshot.user_vectors.row(row).to_vec();
        let want = built.user_index().nearest(&query, 20, Some(row as u32));
        let got = loaded.user_index().nearest(&query, 20, Some(row as u32));
        assert_eq!(got, want, "user row {row}");
    }

    // One flipped byte in the body: refused, said why, and built again.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let rebuilt = Model::load(dir.path(), FeedOptions::default()).unwrap();
    match rebuilt.user_index().origin() {
        IndexOrigin::Built {
            rejected: Some(reason),
            ..
        } => assert!(reason.contains(files::USERS_INDEX), "{reason}"),
        other => panic!("expected a rebuild, got {other:?}"),
    }
}
