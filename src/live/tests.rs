use std::sync::OnceLock;

use serde_json::json;

use super::state::moved;
use super::*;
use crate::candidates::IndexKind;
use crate::demo::{self, DemoConfig};
use crate::feed::{AudienceOptions, Explanation, FeedOptions, FeedRequest, RequestContext};
use crate::index::dot;
use crate::profiles::{Profile, ProfileError, ProfileInput, Profiles};
use crate::snapshot::{Metric, Snapshot};

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| {
        demo::generate(&DemoConfig {
            posts: 1_500,
            users: 100,
            seed: 3,
            dim: 16,
        })
        .unwrap()
    })
}

/// A fresh model (events mutate a model, so tests do not share one).
fn model() -> Arc<Model> {
    model_named(world().model_version())
}

/// A fresh model of the world under another model version.
fn model_named(version: &str) -> Arc<Model> {
    let mut snapshot = world().clone();
    snapshot.manifest.model_version = version.into();
    let options = FeedOptions {
        index: IndexKind::Exact,
        ..FeedOptions::default()
    };
    Arc::new(Model::build(snapshot, options).unwrap())
}

/// The log in `dir` opened for a fresh model of the world (exact retrieval) whose offers to
/// an audience follow `audience`.
fn open_with_audience(dir: &Path, audience: AudienceOptions) -> Live {
    let options = FeedOptions {
        index: IndexKind::Exact,
        audience,
        ..FeedOptions::default()
    };
    let model = Arc::new(Model::build(world().clone(), options).unwrap());
    Live::open(model, dir, LiveOptions::default(), profiles())
        .unwrap()
        .0
}

fn open(dir: &Path, options: LiveOptions) -> (Live, Replayed) {
    Live::open(model(), dir, options, profiles()).unwrap()
}

/// Opens the log in `dir` for a fresh model of the world named `version`.
fn open_as(version: &str, dir: &Path) -> (Live, Replayed) {
    Live::open(
        model_named(version),
        dir,
        LiveOptions::default(),
        profiles(),
    )
    .unwrap()
}

fn profiles() -> Arc<Profiles> {
    Arc::new(Profiles::new(1_000))
}

fn event(user: &str, post: &str, kind: &str) -> serde_json::Value {
    json!({"user_id": user, "post_id": post, "type": kind, "ts": 1_700_000_000})
}

fn user() -> String {
    world().users[5].id.clone()
}

/// A request's context as the API builds it from the user's live state.
fn context_of(viewed: Option<&Viewed>) -> RequestContext<'_> {
    RequestContext {
        signals: viewed.map(|v| &v.signals),
        user_vector: viewed.and_then(|v| v.vector.as_deref()),
        ..RequestContext::default()
    }
}

/// The first page of `user`'s feed as the API serves it: live signals and vector applied.
fn page(live: &Live, user: &str, cursor: Option<&str>) -> (Vec<String>, Vec<f32>, Option<String>) {
    let viewed = live.viewed(user, cursor.is_none());
    let context = context_of(viewed.as_ref());
    let request = FeedRequest {
        user_id: user,
        limit: 20,
        cursor,
    };
    let page = live.model().feed_with(&request, context).unwrap();
    (
        page.items.iter().map(|i| i.post_id.to_string()).collect(),
        page.items.iter().map(|i| i.score).collect(),
        page.next_cursor,
    )
}

#[test]
fn a_hidden_post_never_comes_back_on_any_page() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let user = user();
    let (first, _, _) = page(&live, &user, None);
    let hidden = first[0].clone();
    let outcome = live.ingest(vec![event(&user, &hidden, "hide")]).unwrap();
    assert_eq!(outcome.accepted, 1);
    let (again, _, cursor) = page(&live, &user, None);
    assert!(!again.contains(&hidden));
    let (next, _, _) = page(&live, &user, cursor.as_deref());
    assert!(!next.contains(&hidden));
    // Other users still see it where they did.
    assert_eq!(live.summary(&user).unwrap().hidden, 1);
}

#[test]
fn reports_past_the_threshold_take_a_post_out_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let viewer = user();
    let (first, _, _) = page(&live, &viewer, None);
    let target = first[1].clone();
    let row = live.model().post_row(&target).unwrap();
    let views = live.model().post_stats(row).views;
    let scoring = &live.model().weights().scoring;
    // Reports needed: the rule's minimum count, and its rate of the post's views.
    let needed = (scoring.report_filter_min as u64)
        .max((scoring.report_filter_rate * views as f32).ceil() as u64);
    let reporters: Vec<serde_json::Value> = (0..needed)
        .map(|i| event(&format!("reporter-{i}"), &target, "report"))
        .collect();
    // One short of the threshold the post is demoted (reports weigh on its value) but not
    // out; at the threshold it leaves every feed, to the deepest position.
    let (short, last) = reporters.split_at(reporters.len() - 1);
    live.ingest(short.to_vec()).unwrap();
    assert!(!live.model().suppressed_by_reports(row));
    assert!(whole_feed(&live, &viewer).contains(&row));
    live.ingest(last.to_vec()).unwrap();
    assert!(live.model().suppressed_by_reports(row));
    assert!(!page(&live, &viewer, None).0.contains(&target));
    assert!(!whole_feed(&live, &viewer).contains(&row));
    let other = world().users[9].id.clone();
    assert!(!whole_feed(&live, &other).contains(&row));
    assert!(!whole_feed(&live, "someone-new").contains(&row));
}

/// Rows of `user`'s whole feed, to the deepest position a cursor reaches.
fn whole_feed(live: &Live, user: &str) -> Vec<u32> {
    let depth = live.model().options().max_depth;
    let arranged = live
        .model()
        .arranged(user, depth, RequestContext::default())
        .unwrap();
    arranged.arrangement.items.iter().map(|p| p.row).collect()
}

#[test]
fn a_save_lifts_the_post_and_turns_the_user_toward_it() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let user = user();
    let (first, scores, _) = page(&live, &user, None);
    let (i, target) = (15, first[15].clone());
    let row = live.model().post_row(&target).unwrap();
    let before_vector = live.model().user_vector(&user).unwrap().to_vec();
    let post = live.model().post_vector(row).to_vec();
    let saves: Vec<serde_json::Value> = (0..3).map(|_| event(&user, &target, "save")).collect();
    assert_eq!(live.ingest(saves).unwrap().accepted, 3);

    let viewed = live.viewed(&user, true).unwrap();
    let after_vector = viewed.vector.unwrap();
    assert!(dot(&after_vector, &post) > dot(&before_vector, &post));
    assert_eq!(
        live.model().post_stats(row).saves,
        world().posts[row as usize].stats.saves + 3
    );
    let (again, new_scores, _) = page(&live, &user, None);
    let j = again
        .iter()
        .position(|p| p == &target)
        .expect("still on page 1");
    assert!(
        new_scores[j] > scores[i],
        "{} → {}",
        scores[i],
        new_scores[j]
    );
    assert!(j <= i, "moved from {i} to {j}");
}

#[test]
fn impressions_leave_a_fresh_feed_but_not_the_pages_of_a_feed_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let user = user();
    let (first, _, cursor) = page(&live, &user, None);
    let (second_before, _, _) = page(&live, &user, cursor.as_deref());
    let seen: Vec<serde_json::Value> = first
        .iter()
        .map(|p| event(&user, p, "impression"))
        .collect();
    live.ingest(seen).unwrap();
    // Page 2 of the feed being read is unchanged; a fresh feed leaves the seen posts out.
    assert_eq!(page(&live, &user, cursor.as_deref()).0, second_before);
    let (fresh, _, _) = page(&live, &user, None);
    assert!(fresh.iter().all(|p| !first.contains(p)), "{fresh:?}");
}

#[test]
fn the_log_replays_every_acknowledged_batch_onto_a_fresh_model() {
    let dir = tempfile::tempdir().unwrap();
    let user = user();
    let posts: Vec<String> = world()
        .posts
        .iter()
        .take(10)
        .map(|p| p.id.clone())
        .collect();
    let expected = {
        let (live, replayed) = open(dir.path(), LiveOptions::default());
        assert_eq!(replayed.events, 0);
        live.ingest(vec![
            event(&user, &posts[0], "hide"),
            event(&user, &posts[1], "save"),
        ])
        .unwrap();
        live.ingest(
            posts[2..]
                .iter()
                .map(|p| event(&user, p, "impression"))
                .collect(),
        )
        .unwrap();
        live.ingest(vec![event("someone-new", &posts[3], "like")])
            .unwrap();
        (
            live.summary(&user).unwrap(),
            live.viewed(&user, true).unwrap().vector,
            live.model().post_stats(1),
        )
    };
    let (live, replayed) = open(dir.path(), LiveOptions::default());
    assert_eq!((replayed.batches, replayed.events), (3, 11));
    assert_eq!(replayed.truncated_bytes, None);
    assert_eq!(live.summary(&user).unwrap(), expected.0);
    assert_eq!(live.viewed(&user, true).unwrap().vector, expected.1);
    assert_eq!(live.model().post_stats(1), expected.2);
    assert_eq!(live.summary("someone-new").unwrap().events, 1);
    assert!(
        live.summary("someone-new").unwrap().vector_moved,
        "a like starts a vector"
    );
}

#[test]
fn a_torn_log_tail_loses_only_the_batch_it_tore() {
    let dir = tempfile::tempdir().unwrap();
    let user = user();
    let post = world().posts[0].id.clone();
    {
        let (live, _) = open(dir.path(), LiveOptions::default());
        for _ in 0..3 {
            live.ingest(vec![event(&user, &post, "view")]).unwrap();
        }
    }
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 3).unwrap();
    drop(file);
    let (live, replayed) = open(dir.path(), LiveOptions::default());
    assert_eq!(replayed.events, 2);
    assert!(replayed.truncated_bytes.is_some());
    assert_eq!(live.summary(&user).unwrap().events, 2);
    // The log goes on from the last good record.
    live.ingest(vec![event(&user, &post, "view")]).unwrap();
    drop(live);
    let (live, replayed) = open(dir.path(), LiveOptions::default());
    assert_eq!((replayed.events, replayed.truncated_bytes), (3, None));
    assert_eq!(live.summary(&user).unwrap().events, 3);
}

#[test]
fn bad_items_are_refused_one_by_one_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(
        dir.path(),
        LiveOptions {
            max_users: 2,
            ..LiveOptions::default()
        },
    );
    let post = world().posts[0].id.clone();
    let long = "u".repeat(65);
    let items = vec![
        event("a", &post, "save"),
        event("a", "no-such-post", "save"),
        event("a", &post, "bookmark"),
        json!({"user_id": "a", "post_id": post, "type": "like"}),
        json!({"user_id": "a", "post_id": post, "type": "like", "ts": -1}),
        event(&long, &post, "like"),
        json!({"user_id": "a", "post_id": post, "type": "like", "ts": 1, "extra": 1}),
        event("b", &post, "like"),
        event("c", &post, "like"),
        json!("not an object"),
    ];
    let outcome = live.ingest(items).unwrap();
    assert_eq!(outcome.accepted, 2);
    let codes: Vec<(usize, &str)> = outcome.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(
        codes,
        [
            (1, "unknown_post"),
            (2, "invalid_event"),
            (3, "invalid_event"),
            (4, "invalid_ts"),
            (5, "invalid_user_id"),
            (6, "invalid_event"),
            (8, "users_full"),
            (9, "invalid_event"),
        ]
    );
    let message = |i: usize| {
        &outcome
            .rejected
            .iter()
            .find(|r| r.index == i)
            .unwrap()
            .message
    };
    assert!(message(2).starts_with("type:"), "{}", message(2));
    assert!(message(3).contains("ts"), "{}", message(3));
    assert!(message(6).contains("extra"), "{}", message(6));
    assert_eq!(live.users(), 2);
    let too_many = vec![event("a", &post, "like"); MAX_EVENTS_PER_BATCH + 1];
    assert!(matches!(
        live.ingest(too_many),
        Err(LiveError::TooManyEvents(_))
    ));
}

#[test]
fn per_user_state_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = LiveOptions {
        max_seen: 3,
        max_hidden: 2,
        ..LiveOptions::default()
    };
    let (live, _) = open(dir.path(), options);
    let posts: Vec<String> = world().posts.iter().take(6).map(|p| p.id.clone()).collect();
    live.ingest(posts.iter().map(|p| event("u", p, "impression")).collect())
        .unwrap();
    live.ingest(posts.iter().map(|p| event("u", p, "hide")).collect())
        .unwrap();
    let summary = live.summary("u").unwrap();
    assert_eq!((summary.seen, summary.hidden, summary.events), (3, 2, 12));
    // The most recent are the ones kept.
    let viewed = live.viewed("u", true).unwrap();
    assert!(viewed.signals.seen.contains(&posts[5]) && !viewed.signals.seen.contains(&posts[2]));
    assert!(
        viewed.signals.hidden.contains(&posts[5]) && !viewed.signals.hidden.contains(&posts[3])
    );
}

#[test]
fn a_new_model_keeps_hides_and_reports_and_drops_older_events() {
    let dir = tempfile::tempdir().unwrap();
    let post = world().posts[0].id.clone();
    let other = world().posts[1].id.clone();
    {
        let (live, _) = open(dir.path(), LiveOptions::default());
        live.ingest(vec![
            event("u", &post, "hide"),
            event("u", &other, "impression"),
        ])
        .unwrap();
        let newer =
            json!({"user_id": "u", "post_id": other, "type": "save", "ts": 253_402_300_000_i64});
        live.ingest(vec![newer]).unwrap();
    }
    let (live, replayed) = open_as("next", dir.path());
    assert_eq!(
        replayed.compacted,
        Some((3, 2)),
        "model marker and two batches before; carried hides and newer events after"
    );
    let summary = live.summary("u").unwrap();
    assert_eq!((summary.hidden, summary.seen, summary.events), (1, 0, 2));
    // Carried hides are signals only: the new snapshot's stats are taken as counting them.
    let row = live.model().post_row(&post).unwrap();
    assert_eq!(
        live.model().post_stats(row),
        world().posts[row as usize].stats
    );
    drop(live);
    // Reopened with the same model: nothing more to compact, the same state.
    let (live, replayed) = open_as("next", dir.path());
    assert_eq!(replayed.compacted, None);
    assert_eq!(live.summary("u").unwrap().hidden, 1);
}

#[test]
fn an_embedding_turns_by_at_most_its_step_and_keeps_its_length() {
    let v = vec![3.0, 0.0, 0.0];
    let p = [0.0, 5.0, 0.0];
    let turned = moved(Some(v.clone()), &p, 0.2, Metric::Dot).unwrap();
    let length = dot(&turned, &turned).sqrt();
    assert!((length - 3.0).abs() < 1e-5);
    let angle = (dot(&turned, &v) / (3.0 * length)).acos();
    assert!(angle > 0.0 && angle <= 0.2 + 1e-6, "{angle}");
    // Away from the post for a hide.
    let away = moved(Some(v.clone()), &p, -0.2, Metric::Dot).unwrap();
    assert!(away[1] < 0.0);
    // No vector yet: a positive event starts one at the post's direction; a hide does not.
    assert_eq!(
        moved(None, &p, 0.2, Metric::Cosine).unwrap(),
        vec![0.0, 1.0, 0.0]
    );
    assert_eq!(moved(None, &p, -0.2, Metric::Cosine), None);
    // A zero post changes nothing.
    assert_eq!(moved(Some(v.clone()), &[0.0; 3], 0.2, Metric::Dot), Some(v));
}

fn profile(langs: &[&str], follows: &[&str]) -> Profile {
    Profile::from_input(ProfileInput {
        langs: langs.iter().map(|s| s.to_string()).collect(),
        follows: follows.iter().map(|s| s.to_string()).collect(),
    })
    .unwrap()
}

#[test]
fn profiles_are_logged_replayed_and_carried_to_a_new_model() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (live, _) = open(dir.path(), LiveOptions::default());
        live.put_profile("newbie", profile(&["en"], &["cats"]))
            .unwrap();
        live.put_profile("newbie", profile(&["en", "zh"], &["cats", "food"]))
            .unwrap();
        live.put_profile("other", profile(&["zh"], &[])).unwrap();
    }
    let restored = profiles();
    let (_live, _) = Live::open(
        model(),
        dir.path(),
        LiveOptions::default(),
        restored.clone(),
    )
    .unwrap();
    assert_eq!(restored.get("newbie").unwrap().follows, ["cats", "food"]);
    assert_eq!(restored.len(), 2);
    drop(_live);
    // A new model: the latest profile of each user is carried over.
    let carried = profiles();
    let (_, replayed) = Live::open(
        model_named("later"),
        dir.path(),
        LiveOptions::default(),
        carried.clone(),
    )
    .unwrap();
    assert_eq!(
        replayed.compacted,
        Some((4, 2)),
        "marker and three puts; two profiles kept"
    );
    assert_eq!(carried.get("newbie").unwrap().langs, ["en", "zh"]);
    assert_eq!(carried.get("other").unwrap().langs, ["zh"]);
}

#[test]
fn a_full_profile_store_refuses_a_new_user_before_logging() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Profiles::new(1));
    let (live, _) = Live::open(model(), dir.path(), LiveOptions::default(), store.clone()).unwrap();
    live.put_profile("one", profile(&["en"], &[])).unwrap();
    let refused = live.put_profile("two", profile(&["en"], &[]));
    assert!(matches!(
        refused,
        Err(LiveError::Profile(ProfileError::Full { capacity: 1 }))
    ));
    live.put_profile("one", profile(&["zh"], &[])).unwrap();
    drop(live);
    let store = Arc::new(Profiles::new(10));
    let (_live, _) =
        Live::open(model(), dir.path(), LiveOptions::default(), store.clone()).unwrap();
    assert_eq!(store.len(), 1, "the refused one was never logged");
    assert_eq!(store.get("one").unwrap().langs, ["zh"]);
}

/// A post for `POST /v1/posts`: organic, in `lang`, created `after` seconds past the
/// snapshot's newest post, with `embedding`.
fn new_post(id: &str, lang: &str, after: i64, embedding: &[f32]) -> serde_json::Value {
    json!({
        "id": id, "author": "a_new_creator", "lang": lang, "hashtags": ["tiktokrefugee"],
        "kind": "organic", "created_at": world().newest_post_time().unwrap() + after,
        "embedding": embedding,
    })
}

/// A post as close to `user` as can be: their own embedding.
fn post_for(live: &Live, user: &str, id: &str, after: i64) -> serde_json::Value {
    let model = live.model();
    let lang = world().users.iter().find(|u| u.id == user).unwrap().langs[0].clone();
    new_post(id, &lang, after, model.user_vector(user).unwrap())
}

#[test]
fn a_published_post_is_in_the_very_next_feed_and_found_by_similarity() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let user = user();
    let (before, _, _) = page(&live, &user, None);
    let rows = live
        .publish(vec![post_for(&live, &user, "p_published", 60)])
        .unwrap();
    assert_eq!(rows, [world().posts.len() as u32]);
    let model = live.model();
    assert_eq!(model.post_row("p_published"), Some(rows[0]));
    assert_eq!(model.published().0, 1);
    // Retrieval finds it first: it is the user's own direction.
    let found = model
        .retriever()
        .similar(model.user_vector(&user).unwrap(), 5);
    assert_eq!(found[0].row, rows[0]);
    let (after, _, _) = page(&live, &user, None);
    assert!(!before.contains(&"p_published".to_string()));
    assert!(after.contains(&"p_published".to_string()), "{after:?}");
    // Events may name it, and move its stats.
    let outcome = live
        .ingest(vec![event(&user, "p_published", "save")])
        .unwrap();
    assert_eq!(outcome.accepted, 1, "{:?}", outcome.rejected);
    assert_eq!(model.post_stats(rows[0]).saves, 1);
}

#[test]
fn a_stranger_gets_a_published_post_through_the_fresh_source() {
    let dir = tempfile::tempdir().unwrap();
    // Without the offer to the audience, which would take a new creator's post first.
    let live = open_with_audience(
        dir.path(),
        AudienceOptions {
            candidates: 0,
            ..Default::default()
        },
    );
    let model = live.model().clone();
    // A user known only by the like that started their vector: a personal feed.
    let first = world().posts[0].id.clone();
    live.ingest(vec![event("newcomer", &first, "like")])
        .unwrap();
    // Far from them: the opposite of their vector, so only the fresh source can bring it.
    let away: Vec<f32> = live
        .vector("newcomer")
        .unwrap()
        .iter()
        .map(|v| -v)
        .collect();
    let lang = world().posts[0].lang.clone();
    live.publish(vec![new_post("p_far", &lang, 30, &away)])
        .unwrap();
    let row = model.post_row("p_far").unwrap();
    let viewed = live.viewed("newcomer", true).unwrap();
    let context = context_of(Some(&viewed));
    let depth = model.options().max_depth;
    let arranged = model.arranged("newcomer", depth, context).unwrap();
    let candidate = arranged.candidate(row).expect("a candidate");
    assert_eq!(candidate.source, crate::candidates::Source::Fresh);
}

/// Where each problem is: the post's index and the field.
fn located(problems: &[PostProblem]) -> Vec<(usize, &str)> {
    problems
        .iter()
        .map(|p| (p.index, p.field.as_str()))
        .collect()
}

#[test]
fn publishing_is_all_or_nothing_and_an_existing_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let user = user();
    live.publish(vec![post_for(&live, &user, "p_one", 10)])
        .unwrap();
    let records = live.wal_stats().records;
    let existing = world().posts[3].id.clone();
    let err = live
        .publish(vec![
            post_for(&live, &user, "p_two", 10),
            post_for(&live, &user, &existing, 10),
            post_for(&live, &user, "p_one", 10),
        ])
        .unwrap_err();
    let LiveError::PostsExist(problems) = err else {
        panic!("{err}")
    };
    assert_eq!(located(&problems), [(1, "id"), (2, "id")]);
    // Invalid posts: each named; a repeated id too.
    let mut wrong_dim = post_for(&live, &user, "p_three", 10);
    wrong_dim["embedding"] = json!([1.0, 2.0]);
    let mut ad = post_for(&live, &user, "p_four", 10);
    ad["kind"] = json!("advert");
    let err = live
        .publish(vec![
            wrong_dim,
            ad,
            post_for(&live, &user, "p_five", 10),
            post_for(&live, &user, "p_five", 10),
        ])
        .unwrap_err();
    let LiveError::InvalidPosts(problems) = err else {
        panic!("{err}")
    };
    assert_eq!(
        located(&problems),
        [(0, "embedding"), (1, "kind"), (3, "id")]
    );
    assert!(
        problems[0].message.contains("dimension is 16"),
        "{}",
        problems[0]
    );
    // Nothing of either batch was logged or published.
    assert_eq!(live.wal_stats().records, records);
    assert_eq!(live.model().published().0, 1);
    assert_eq!(live.model().post_row("p_two"), None);
    assert!(matches!(
        live.publish(vec![json!({}); MAX_POSTS_PER_BATCH + 1]),
        Err(LiveError::TooManyPosts(_))
    ));
}

#[test]
fn published_posts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = LiveOptions {
        max_published: 2,
        ..LiveOptions::default()
    };
    let (live, _) = open(dir.path(), options);
    let user = user();
    live.publish(vec![post_for(&live, &user, "p_1", 1)])
        .unwrap();
    let err = live
        .publish(vec![
            post_for(&live, &user, "p_2", 1),
            post_for(&live, &user, "p_3", 1),
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LiveError::PublishedFull {
                capacity: 2,
                held: 1
            }
        ),
        "{err}"
    );
    live.publish(vec![post_for(&live, &user, "p_2", 1)])
        .unwrap();
    // A known id is the answer even when the store is full; an empty batch logs nothing.
    let err = live
        .publish(vec![post_for(&live, &user, "p_1", 1)])
        .unwrap_err();
    assert!(matches!(err, LiveError::PostsExist(_)), "{err}");
    let records = live.wal_stats().records;
    assert_eq!(live.publish(Vec::new()).unwrap(), Vec::<u32>::new());
    assert_eq!(live.wal_stats().records, records);
    // Published organic posts count under their hashtags.
    assert!(live.model().hashtags().organic_posts("tiktokrefugee") >= 2);
}

#[test]
fn published_posts_and_their_events_are_replayed_and_carried_to_a_new_model() {
    let dir = tempfile::tempdir().unwrap();
    let user = user();
    let expected = {
        let (live, _) = open(dir.path(), LiveOptions::default());
        live.publish(vec![
            post_for(&live, &user, "p_newer", 3_600),
            post_for(&live, &user, "p_older", -3_600),
        ])
        .unwrap();
        live.ingest(vec![
            event(&user, "p_newer", "save"),
            event(&user, "p_older", "hide"),
        ])
        .unwrap();
        let model = live.model();
        let row = model.post_row("p_newer").unwrap();
        (
            row,
            model.post_stats(row),
            live.summary(&user).unwrap(),
            page(&live, &user, None).0,
        )
    };
    let (live, replayed) = open(dir.path(), LiveOptions::default());
    assert_eq!((replayed.posts, replayed.events), (2, 2));
    let model = live.model();
    assert_eq!(model.post_row("p_newer"), Some(expected.0));
    assert_eq!(model.post_stats(expected.0), expected.1);
    assert_eq!(live.summary(&user).unwrap(), expected.2);
    assert_eq!(page(&live, &user, None).0, expected.3);
    drop(live);
    // A new model that does not hold them: both stay, whatever their age.
    let (live, replayed) = open_as("next", dir.path());
    assert_eq!(replayed.posts, 2);
    assert!(live.model().post_row("p_newer").is_some());
    assert!(live.model().post_row("p_older").is_some());
    drop(live);
    let (live, _) = open_as("next", dir.path());
    assert!(live.model().post_row("p_newer").is_some());
}

#[test]
fn hashtag_activity_follows_publishing_and_onboarding_and_replays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let lang = world().posts[0].lang.clone();
    let tags_for = |live: &Live| -> Vec<(String, f32)> {
        live.model()
            .recommend_hashtags("stranger", None, None, Some(&lang), 10)
            .unwrap()
            .hashtags
            .iter()
            .map(|p| (p.tag.to_string(), p.score))
            .collect()
    };
    let (before, after) = {
        let (live, _) = open(dir.path(), LiveOptions::default());
        let before = tags_for(&live);
        // The page's last tag gets a burst of new posts and followers.
        let tag = before.last().unwrap().0.clone();
        let posts: Vec<serde_json::Value> = (0..20)
            .map(|i| {
                let mut p = post_for(&live, &user(), &format!("p_burst_{i}"), 60);
                p["hashtags"] = json!([tag]);
                p["lang"] = json!(lang);
                p
            })
            .collect();
        live.publish(posts).unwrap();
        for u in 0..5 {
            let profile = profile(&[&lang], &[&tag]);
            live.put_profile(&format!("fan_{u}"), profile).unwrap();
        }
        // One fan puts the same picks again: live and replay must count it alike.
        live.put_profile("fan_0", profile(&[&lang], &[&tag]))
            .unwrap();
        let after = tags_for(&live);
        assert_eq!(after[0].0, tag, "{before:?} → {after:?}");
        (before, after)
    };
    assert_ne!(before, after);
    let (live, _) = open(dir.path(), LiveOptions::default());
    assert_eq!(tags_for(&live), after);
}

#[test]
fn a_successor_takes_the_log_over_and_the_retired_state_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let user = user();
    let hidden = world().posts[2].id.clone();
    let (old, _) = open(dir.path(), LiveOptions::default());
    old.ingest(vec![event(&user, &hidden, "hide")]).unwrap();
    old.publish(vec![post_for(&old, &user, "p_carried", 600)])
        .unwrap();
    let mut installed = None;
    let (next, replayed) = old
        .successor(model_named("next"), |live| installed = Some(live))
        .unwrap();
    assert!(Arc::ptr_eq(installed.as_ref().unwrap(), &next));
    assert_eq!(replayed.posts, 1);
    assert_eq!(next.summary(&user).unwrap().hidden, 1);
    assert!(next.model().post_row("p_carried").is_some());
    // The old state answers Retired to every write; the successor takes them.
    assert!(matches!(
        old.ingest(vec![event(&user, &hidden, "save")]),
        Err(LiveError::Retired)
    ));
    assert!(matches!(
        old.put_profile("x", profile(&["en"], &[])),
        Err(LiveError::Retired)
    ));
    assert!(matches!(
        old.successor(model(), |_| {}),
        Err(LiveError::Retired)
    ));
    next.ingest(vec![event("after", &hidden, "like")]).unwrap();
    drop((old, next));
    // What the successor logged is there after a restart.
    let (again, _) = open_as("next", dir.path());
    assert_eq!(again.summary(&user).unwrap().hidden, 1);
    assert_eq!(again.summary("after").unwrap().events, 1);
    assert!(again.model().post_row("p_carried").is_some());
}

#[test]
fn a_reload_of_the_same_version_counts_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let post = world().posts[4].id.clone();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let saves: Vec<serde_json::Value> = (0..3).map(|_| event("fan", &post, "save")).collect();
    live.ingest(saves).unwrap();
    let row = live.model().post_row(&post).unwrap();
    let expected = live.model().post_stats(row);
    assert_eq!(expected.saves, world().posts[4].stats.saves + 3);
    // A fresh model of the same version: the log is replayed onto it once, not added to the
    // old model's counts.
    let (next, replayed) = live.successor(model(), |_| {}).unwrap();
    assert_eq!(replayed.compacted, None);
    assert_eq!(next.model().post_stats(row), expected);
    let (again, _) = next.successor(model(), |_| {}).unwrap();
    assert_eq!(again.model().post_stats(row), expected);
}

/// `user`'s feed sequence to `depth`, arranged as the API would (live signals and vector).
fn arranged_for(live: &Live, user: &str, depth: usize) -> crate::feed::ArrangedFeed {
    let viewed = live.viewed(user, true);
    let context = context_of(viewed.as_ref());
    live.model().arranged(user, depth, context).unwrap()
}

#[test]
fn a_user_gets_what_their_nearest_users_saved_as_lookalike_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let model = live.model().clone();
    let user = user();
    let me = model.user_vector(&user).unwrap().to_vec();
    let slot = model.user_index().slot(&user);
    let users = model.user_index();
    let all = users.nearest(&me, world().users.len(), slot);
    let near: Vec<String> = all[..3].iter().map(|n| users.id(n.slot).unwrap()).collect();
    let far: Vec<String> = all[all.len() - 3..]
        .iter()
        .map(|n| users.id(n.slot).unwrap())
        .collect();
    // Two posts far from the user, which personal retrieval would not bring.
    let mut organic: Vec<(f32, usize)> = world()
        .posts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == crate::snapshot::PostKind::Organic)
        .map(|(row, _)| (dot(&me, model.post_vector(row as u32)), row))
        .collect();
    organic.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (saved_near, saved_far) = (organic[0].1 as u32, organic[1].1 as u32);
    let id = |row: u32| model.post(row).id.clone();
    let before = arranged_for(&live, &user, 100);
    assert!(before.candidate(saved_near).is_none());

    // An ad the neighbours save too: ads reach a feed only through ad slots.
    let ad = world()
        .posts
        .iter()
        .position(|p| p.kind == crate::snapshot::PostKind::Ad)
        .unwrap() as u32;
    let mut events = Vec::new();
    for n in &near {
        events.push(event(n, &id(saved_near), "save"));
        events.push(event(n, &id(ad), "save"));
    }
    for f in &far {
        events.push(event(f, &id(saved_far), "save"));
    }
    assert_eq!(live.ingest(events).unwrap().accepted, 9);

    let after = arranged_for(&live, &user, 100);
    assert!(
        after
            .candidate(ad)
            .is_none_or(|c| c.source == crate::candidates::Source::Ads),
        "an ad is never an organic candidate"
    );
    assert!(
        after
            .arrangement
            .items
            .iter()
            .filter(|p| p.row == ad)
            .all(|p| p.kind == crate::snapshot::PostKind::Ad)
    );
    let candidate = after
        .candidate(saved_near)
        .expect("the neighbours' save is a candidate");
    assert_eq!(candidate.source, crate::candidates::Source::Lookalike);
    // What the farthest users saved is not.
    assert!(
        after
            .candidate(saved_far)
            .is_none_or(|c| c.source != crate::candidates::Source::Lookalike)
    );
    // The same after a restart: the log replays the engagements.
    drop(live);
    let (live, _) = open(dir.path(), LiveOptions::default());
    let replayed = arranged_for(&live, &user, 100);
    assert_eq!(
        replayed.candidate(saved_near).map(|c| c.source),
        Some(crate::candidates::Source::Lookalike)
    );
}

/// Every page of `user`'s feed with explanations, to `pages` pages.
fn explained_pages(live: &Live, user: &str, pages: usize) -> Vec<Vec<(String, Explanation)>> {
    let viewed = live.viewed(user, true);
    let mut cursor: Option<String> = None;
    let mut out = Vec::new();
    for _ in 0..pages {
        let context = RequestContext {
            explain: true,
            ..context_of(viewed.as_ref())
        };
        let request = FeedRequest {
            user_id: user,
            limit: 20,
            cursor: cursor.as_deref(),
        };
        let page = live.model().feed_with(&request, context).unwrap();
        out.push(
            page.items
                .iter()
                .map(|i| (i.post_id.to_string(), i.explain.unwrap()))
                .collect(),
        );
        cursor = page.next_cursor;
    }
    out
}

fn exploring(e: &Explanation) -> bool {
    e.decisions
        .iter()
        .any(|d| matches!(d, crate::policy::Decision::Exploring { .. }))
}

#[test]
fn a_small_creators_new_post_reaches_its_nearest_users_within_the_share_and_stops_after_the_threshold()
 {
    let dir = tempfile::tempdir().unwrap();
    let live = open_with_audience(
        dir.path(),
        AudienceOptions {
            audience_size: 10,
            max_impressions: 5,
            ..Default::default()
        },
    );
    let model = live.model().clone();
    let user = user();
    // Three new posts of a new creator, all in the user's direction.
    let posts: Vec<serde_json::Value> = (0..3)
        .map(|i| post_for(&live, &user, &format!("p_new{i}"), 60 + i))
        .collect();
    live.publish(posts).unwrap();
    let audience = model.post_audience("p_new0", 10).unwrap();
    assert!(audience.small_creator);
    let offer = audience.offer.expect("on offer");
    assert!(offer.active);
    let members: Vec<&str> = audience.users.iter().map(|(id, _)| id.as_str()).collect();
    assert!(members.contains(&user.as_str()), "{members:?}");

    // Each member's feed: one post on offer per page, shown as `audience` and exploring.
    for member in &members {
        let pages = explained_pages(&live, member, 3);
        for (n, page) in pages.iter().enumerate() {
            let offered: Vec<&(String, Explanation)> = page
                .iter()
                .filter(|(id, _)| id.starts_with("p_new"))
                .collect();
            assert_eq!(offered.len(), 1, "{member}, page {n}: {offered:?}");
            let (_, e) = offered[0];
            assert_eq!(e.source, crate::candidates::Source::Audience);
            assert!(exploring(e));
            assert!(e.placed_score >= e.blend);
            assert_eq!(page.iter().filter(|(_, e)| exploring(e)).count(), 1);
        }
    }
    // A user outside the audience is not offered it.
    let outsider = model.user_index().nearest(
        &model
            .post_vector(model.post_row("p_new0").unwrap())
            .iter()
            .map(|x| -x)
            .collect::<Vec<f32>>(),
        1,
        None,
    )[0]
    .slot;
    let outsider = model.user_index().id(outsider).unwrap();
    assert!(!members.contains(&outsider.as_str()));
    let arranged = arranged_for(&live, &outsider, 100);
    let row = model.post_row("p_new0").unwrap();
    assert!(
        arranged
            .candidate(row)
            .is_none_or(|c| c.source != crate::candidates::Source::Audience)
    );

    // Five impressions (by users outside the audience) end the offer of p_new0 only.
    let others: Vec<String> = world()
        .users
        .iter()
        .map(|u| u.id.clone())
        .filter(|id| !members.contains(&id.as_str()))
        .take(5)
        .collect();
    let events = others
        .iter()
        .map(|u| event(u, "p_new0", "impression"))
        .collect();
    assert_eq!(live.ingest(events).unwrap().accepted, 5);
    let offer = model.post_audience("p_new0", 10).unwrap().offer.unwrap();
    assert_eq!(offer.impressions, 5);
    assert!(!offer.active);
    let arranged = arranged_for(&live, &user, 100);
    let c = arranged.candidate(row).expect("still near the user");
    assert_ne!(c.source, crate::candidates::Source::Audience);
    let placed = arranged.arrangement.items.iter().find(|p| p.row == row);
    assert!(placed.is_none_or(|p| {
        p.decisions
            .iter()
            .all(|d| !matches!(d, crate::policy::Decision::Exploring { .. }))
    }));
    // The others are still on offer.
    assert!(
        model
            .post_audience("p_new1", 10)
            .unwrap()
            .offer
            .unwrap()
            .active
    );
}

#[test]
fn a_post_of_an_author_with_many_views_is_not_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = open(dir.path(), LiveOptions::default());
    let model = live.model().clone();
    // The author whose snapshot posts have the most views.
    let mut views: std::collections::HashMap<&str, u64> = Default::default();
    for p in &world().posts {
        *views.entry(p.author.as_str()).or_default() += p.stats.views;
    }
    let (author, total) = views.into_iter().max_by_key(|&(a, v)| (v, a)).unwrap();
    assert!(total >= model.options().audience.small_creator_max_views);
    let mut post = post_for(&live, &user(), "p_big", 60);
    post["author"] = json!(author);
    live.publish(vec![post]).unwrap();
    let audience = model.post_audience("p_big", 5).unwrap();
    assert!(!audience.small_creator);
    assert!(audience.offer.is_none());
    assert_eq!(audience.users.len(), 5);
}
