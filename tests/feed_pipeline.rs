//! The feed pipeline's candidate sources and filters, end to end through `Model`: what each
//! source contributes, and that no filtered post is ever served, on any page.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use feedrank::candidates::{IndexKind, Source, UserSignals};
use feedrank::feed::{FeedOptions, FeedRequest, Model, RequestContext};
use feedrank::scoring;
use feedrank::snapshot::Snapshot;

mod common;

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(3_000, 200, 11, 32))
}

fn options() -> FeedOptions {
    FeedOptions {
        index: IndexKind::Exact,
        ..FeedOptions::default()
    }
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::build(world().clone(), options()).unwrap())
}

/// Every post id of a feed, following cursors to the end.
fn whole_feed(model: &Model, user: &str, signals: Option<&UserSignals>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let request = FeedRequest {
            user_id: user,
            limit: 50,
            cursor: cursor.as_deref(),
        };
        let page = model
            .feed_with(
                &request,
                RequestContext {
                    signals,
                    ..RequestContext::default()
                },
            )
            .unwrap();
        ids.extend(page.items.iter().map(|i| i.post_id.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

#[test]
fn every_source_contributes_within_its_quota_and_without_duplicates() {
    let model = model();
    let world = world();
    let quotas = model.options().source_quotas();
    let mut totals: HashMap<Source, usize> = HashMap::new();
    for user in world.users.iter().take(40) {
        let candidates = model.candidates(&user.id, None).unwrap();
        let rows: HashSet<u32> = candidates.iter().map(|c| c.row).collect();
        assert_eq!(rows.len(), candidates.len(), "{}: a duplicate", user.id);
        let mut per_source: HashMap<Source, usize> = HashMap::new();
        for c in &candidates {
            *per_source.entry(c.source).or_default() += 1;
            *totals.entry(c.source).or_default() += 1;
        }
        for (source, quota) in [
            (Source::Personal, quotas.personal),
            (Source::Hashtag, quotas.hashtag),
            (Source::Trending, quotas.trending),
            (Source::Fresh, quotas.fresh),
        ] {
            assert!(per_source.get(&source).copied().unwrap_or(0) <= quota);
        }
    }
    // On the demo world (users follow hashtags; posts are spread over time), every source
    // finds posts the others did not.
    for source in [
        Source::Personal,
        Source::Hashtag,
        Source::Trending,
        Source::Fresh,
    ] {
        assert!(
            totals.get(&source).copied().unwrap_or(0) > 0,
            "{source:?} found nothing"
        );
    }
}

#[test]
fn a_viewers_hidden_reported_seen_and_blocked_posts_never_appear_on_any_page() {
    let model = model();
    let world = world();
    let by_id: HashMap<&str, &str> = world
        .posts
        .iter()
        .map(|p| (p.id.as_str(), p.author.as_str()))
        .collect();
    for user in world.users.iter().take(10) {
        let before = whole_feed(model, &user.id, None);
        assert!(before.len() >= 10);
        let signals = UserSignals {
            hidden: HashSet::from([before[0].clone()]),
            reported: HashSet::from([before[1].clone()]),
            seen: before[3..8].iter().cloned().collect(),
            blocked_authors: HashSet::from([by_id[before[2].as_str()].to_string()]),
            ..UserSignals::default()
        };
        let after = whole_feed(model, &user.id, Some(&signals));
        let distinct: HashSet<&String> = after.iter().collect();
        assert_eq!(distinct.len(), after.len(), "{}: a post twice", user.id);
        for id in &after {
            assert!(!signals.hidden.contains(id) && !signals.reported.contains(id));
            assert!(
                !signals.seen.contains(id),
                "{}: seen {id} served again",
                user.id
            );
            assert!(!signals.blocked_authors.contains(by_id[id.as_str()]));
        }
    }
    // A viewer the snapshot does not know is filtered too.
    let anon = whole_feed(model, "someone_new", None);
    let signals = UserSignals {
        hidden: HashSet::from([anon[0].clone()]),
        ..UserSignals::default()
    };
    assert!(!whole_feed(model, "someone_new", Some(&signals)).contains(&anon[0]));
}

#[test]
fn a_post_past_the_report_threshold_is_shown_to_nobody() {
    let mut snapshot = world().clone();
    // The post at the top of the first user's feed gets reported by many.
    let target = whole_feed(model(), &snapshot.users[0].id, None)[0].clone();
    let post = snapshot.posts.iter_mut().find(|p| p.id == target).unwrap();
    post.stats.views = 1_000;
    post.stats.reports = 40;
    let config = scoring::ScoringConfig::default();
    assert!(scoring::reported_past_threshold(&post.stats, &config));
    let users: Vec<String> = snapshot
        .users
        .iter()
        .take(20)
        .map(|u| u.id.clone())
        .collect();
    let reported = Model::build(snapshot, options()).unwrap();
    for user in users.iter().map(String::as_str).chain(["someone_new"]) {
        assert!(
            !whole_feed(&reported, user, None).contains(&target),
            "{user} was shown {target}"
        );
    }
}

#[test]
fn hashtag_candidates_come_from_followed_hashtags_and_trending_and_fresh_from_their_windows() {
    let model = model();
    let world = world();
    let options = model.options();
    let now = model.now();
    for user in world.users.iter().take(40) {
        for c in model.candidates(&user.id, None).unwrap() {
            let post = &world.posts[c.row as usize];
            let age = now - post.created_at;
            match c.source {
                Source::Hashtag => {
                    assert!(post.hashtags.iter().any(|t| user.follows.contains(t)))
                }
                Source::Trending => {
                    assert!(age <= i64::from(options.trending_window_hours) * 3600)
                }
                Source::Fresh => {
                    assert!(age <= i64::from(options.fresh_window_hours) * 3600);
                    assert!(post.stats.views < options.fresh_max_views);
                }
                Source::Personal => assert!(c.similarity.is_some()),
                other => panic!("{other:?} is not a source of gathered candidates"),
            }
        }
    }
}
