use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

use super::*;
use crate::snapshot::{Metric, PostKind};

const SMALL: DemoConfig = DemoConfig {
    posts: 5_000,
    users: 600,
    seed: 7,
    dim: 32,
};

/// One shared small world: generating it is the slow part of these tests.
fn world() -> &'static (Snapshot, GroundTruth) {
    static WORLD: OnceLock<(Snapshot, GroundTruth)> = OnceLock::new();
    WORLD.get_or_init(|| generate_with_truth(&SMALL).expect("valid config"))
}

fn share(count: usize, total: usize) -> f64 {
    count as f64 / total as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    sxy / (sxx * syy).sqrt()
}

fn dot(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x * y) as f64).sum()
}

fn is_cjk(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c)
}

#[test]
fn default_config_is_the_documented_one() {
    assert_eq!(
        DemoConfig::default(),
        DemoConfig {
            posts: 50_000,
            users: 5_000,
            seed: 42,
            dim: 64
        }
    );
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (DemoConfig { posts: 0, ..SMALL }, "posts"),
        (DemoConfig { dim: 7, ..SMALL }, "dim"),
        (DemoConfig { dim: 0, ..SMALL }, "dim"),
        (
            DemoConfig {
                users: usize::MAX,
                ..SMALL
            },
            "users",
        ),
        (
            DemoConfig {
                posts: 20_000_000,
                ..SMALL
            },
            "posts",
        ),
    ];
    for (config, field) in cases {
        let err = generate(&config).expect_err("config must be rejected");
        let DemoError::InvalidConfig { field: got, .. } = &err;
        assert_eq!(*got, field);
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
}

#[test]
fn smallest_valid_worlds_generate() {
    for posts in [1, 2, 13, 40] {
        let config = DemoConfig {
            posts,
            users: 0,
            seed: 1,
            dim: 8,
        };
        let s = generate(&config).expect("valid config");
        assert_eq!(s.posts.len(), posts);
        assert_eq!(s.post_vectors.dim(), (posts, 8));
        assert!(s.users.is_empty());
        assert_eq!(s.user_vectors.dim(), (0, 8));
    }
}

#[test]
fn same_seed_same_world_and_other_seed_other_world() {
    let config = DemoConfig {
        posts: 800,
        users: 100,
        seed: 99,
        dim: 16,
    };
    let a = generate(&config).unwrap();
    let b = generate(&config).unwrap();
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.posts, b.posts);
    assert_eq!(a.post_vectors, b.post_vectors);
    assert_eq!(a.users, b.users);
    assert_eq!(a.user_vectors, b.user_vectors);
    assert_eq!(a.hashtags, b.hashtags);
    assert_eq!(a.hashtag_vectors, b.hashtag_vectors);

    let c = generate(&DemoConfig {
        seed: 100,
        ..config
    })
    .unwrap();
    assert_ne!(a.posts, c.posts);
    assert_ne!(a.post_vectors, c.post_vectors);
    assert_ne!(a.users, c.users);
    assert_eq!(c.manifest.model_version, "demo-100");
    // The tag vocabulary is fixed; only its geometry depends on the seed.
    assert_eq!(a.hashtags, c.hashtags);
    assert_ne!(a.hashtag_vectors, c.hashtag_vectors);
}

#[test]
fn user_count_does_not_change_posts() {
    let config = DemoConfig {
        posts: 500,
        users: 50,
        seed: 3,
        dim: 8,
    };
    let a = generate(&config).unwrap();
    let b = generate(&DemoConfig { users: 0, ..config }).unwrap();
    assert_eq!(a.posts, b.posts);
    assert_eq!(a.post_vectors, b.post_vectors);
}

#[test]
fn sizes_and_manifest_follow_the_config() {
    let (s, truth) = world();
    assert_eq!(s.posts.len(), SMALL.posts);
    assert_eq!(s.post_vectors.dim(), (SMALL.posts, SMALL.dim));
    assert_eq!(s.users.len(), SMALL.users);
    assert_eq!(s.user_vectors.dim(), (SMALL.users, SMALL.dim));
    assert_eq!(s.hashtags.len(), NUM_HASHTAGS);
    assert_eq!(s.hashtag_vectors.dim(), (NUM_HASHTAGS, SMALL.dim));
    assert_eq!(truth.post_topic.len(), SMALL.posts);
    assert_eq!(truth.post_quality.len(), SMALL.posts);
    assert_eq!(truth.user_topics.len(), SMALL.users);
    assert_eq!(truth.hashtag_topic.len(), NUM_HASHTAGS);
    assert_eq!(truth.topics.len(), 20);

    let m = &s.manifest;
    assert_eq!(m.format_version, 1);
    assert_eq!(m.model_version, "demo-7");
    assert_eq!(m.created_at, "2025-01-19T12:00:00Z");
    assert_eq!(m.dim, SMALL.dim);
    assert_eq!(m.metric, Metric::Cosine);
    assert!(m.files.is_empty());
    assert!(m.scoring.is_empty());
}

#[test]
fn ids_are_unique_well_formed_and_in_time_order() {
    let (s, _) = world();
    let post_ids: BTreeSet<&str> = s.posts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(post_ids.len(), s.posts.len());
    let user_ids: BTreeSet<&str> = s.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(user_ids.len(), s.users.len());
    let tags: BTreeSet<&str> = s.hashtags.iter().map(|h| h.tag.as_str()).collect();
    assert_eq!(tags.len(), s.hashtags.len());

    assert_eq!(s.posts[122].id, "p_000123");
    assert_eq!(s.users[41].id, "u_0042");
    for p in &s.posts {
        assert!(p.id.len() <= 64 && p.author.len() <= 64);
        assert!(p.author.starts_with("a_") && p.author[2..].parse::<u32>().is_ok());
        assert!((WINDOW_START..=DEMO_NOW).contains(&p.created_at));
    }
    assert!(
        s.posts
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
    assert!(
        s.users
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

#[test]
fn authors_are_many_with_heavy_tailed_output() {
    let (s, truth) = world();
    let mut per_author: BTreeMap<&str, usize> = BTreeMap::new();
    let mut topics: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
    for (p, &t) in s.posts.iter().zip(&truth.post_topic) {
        *per_author.entry(&p.author).or_default() += 1;
        *topics.entry(&p.author).or_default().entry(t).or_default() += 1;
    }
    let n = per_author.len() as f64;
    let expected = SMALL.posts as f64 / 12.0;
    assert!(n > 0.8 * expected && n < 1.3 * expected, "{n} authors");
    let max = *per_author.values().max().unwrap() as f64;
    let mean = SMALL.posts as f64 / n;
    assert!(max > 5.0 * mean, "busiest author {max} vs mean {mean}");
    let singles = per_author.values().filter(|&&c| c == 1).count();
    assert!(singles as f64 > 0.03 * n, "{singles} one-post authors");

    // Authors with 10+ posts put most of them into their top two topics.
    let (mut top2, mut all) = (0, 0);
    for (author, count) in &per_author {
        if *count >= 10 {
            let mut by_topic: Vec<usize> = topics[author].values().copied().collect();
            by_topic.sort_unstable_by(|a, b| b.cmp(a));
            top2 += by_topic.iter().take(2).sum::<usize>();
            all += count;
        }
    }
    assert!(
        share(top2, all) > 0.9,
        "top-two topic share {}",
        share(top2, all)
    );
}

#[test]
fn hashtags_are_normalised_plausible_and_known() {
    let (s, truth) = world();
    let known: BTreeSet<&str> = s.hashtags.iter().map(|h| h.tag.as_str()).collect();
    for h in &s.hashtags {
        let t = &h.tag;
        assert!(!t.is_empty() && !t.starts_with('#'), "{t:?}");
        assert_eq!(*t, t.nfkc().collect::<String>(), "{t:?} not NFKC");
        assert_eq!(*t, t.to_lowercase(), "{t:?} not lower case");
        assert!(t.chars().all(|c| c.is_alphanumeric()), "{t:?}");
        assert!(t.chars().any(|c| !c.is_ascii_digit()), "{t:?}");
        let en = &h.display["en"];
        let zh = &h.display["zh"];
        assert!(en.starts_with('#') && en[1..].to_lowercase() == *t || !t.is_ascii());
        assert!(zh.starts_with('#') && zh.chars().any(is_cjk), "{zh:?}");
    }
    for tag in [
        "tiktokrefugee",
        "newhere",
        "hellofromusa",
        "languageexchange",
        "catsofrednote",
        "猫咪",
    ] {
        assert!(known.contains(tag), "{tag} missing");
    }
    let newcomer = truth.hashtag_topic.iter().filter(|t| t.is_none()).count();
    assert!((5..=15).contains(&newcomer), "{newcomer} newcomer tags");
    // Every topic has a good number of tags.
    for topic in 0..truth.topics.len() {
        let n = truth
            .hashtag_topic
            .iter()
            .filter(|&&t| t == Some(topic))
            .count();
        assert!((10..=20).contains(&n), "topic {topic} has {n} tags");
    }

    let mut used = BTreeSet::new();
    for p in &s.posts {
        let distinct: BTreeSet<&String> = p.hashtags.iter().collect();
        assert_eq!(
            distinct.len(),
            p.hashtags.len(),
            "duplicate tag on {}",
            p.id
        );
        for tag in &p.hashtags {
            assert!(known.contains(tag.as_str()), "{tag} not in the list");
            used.insert(tag.as_str());
        }
    }
    assert!(used.len() > 200, "only {} tags in use", used.len());
    for u in &s.users {
        assert!(!u.follows.is_empty());
        assert!(u.follows.iter().all(|t| known.contains(t.as_str())));
    }
}

#[test]
fn newcomer_tags_appear_only_in_the_wave_and_mostly_in_english() {
    let (s, truth) = world();
    let newcomer: BTreeSet<&str> = s
        .hashtags
        .iter()
        .zip(&truth.hashtag_topic)
        .filter(|(_, t)| t.is_none())
        .map(|(h, _)| h.tag.as_str())
        .collect();
    let (mut en, mut zh) = (0, 0);
    for p in &s.posts {
        if p.hashtags.iter().any(|t| newcomer.contains(t.as_str())) {
            assert!(p.created_at >= WAVE_START, "{} predates the wave", p.id);
            match p.lang.as_str() {
                "en" => en += 1,
                "zh" => zh += 1,
                _ => {}
            }
        }
    }
    assert!(en > 2 * zh && zh > 0, "en {en}, zh {zh}");
}

#[test]
fn kinds_have_the_documented_shares() {
    let (s, truth) = world();
    let n = s.posts.len();
    let count = |k: PostKind| s.posts.iter().filter(|p| p.kind == k).count();
    let ads = share(count(PostKind::Ad), n);
    let sponsored = share(count(PostKind::Sponsored), n);
    assert!((0.045..=0.055).contains(&ads), "ads {ads}");
    assert!(
        (0.025..=0.035).contains(&sponsored),
        "sponsored {sponsored}"
    );

    let organic = count(PostKind::Organic);
    let clickbait = truth.post_clickbait.iter().filter(|&&c| c).count();
    let cb = share(clickbait, organic);
    assert!((0.035..=0.045).contains(&cb), "clickbait {cb}");
    for (p, &c) in s.posts.iter().zip(&truth.post_clickbait) {
        assert!(!c || p.kind == PostKind::Organic);
    }

    let commercial = [
        "skincare",
        "fashion",
        "tech",
        "finance",
        "travel_china",
        "food",
    ];
    let brands: BTreeSet<&str> = s
        .posts
        .iter()
        .filter(|p| p.kind == PostKind::Ad)
        .map(|p| p.author.as_str())
        .collect();
    for (p, &t) in s.posts.iter().zip(&truth.post_topic) {
        if p.kind == PostKind::Ad {
            assert!(
                commercial.contains(&truth.topics[t].key),
                "ad in {}",
                truth.topics[t].key
            );
        } else {
            assert!(!brands.contains(p.author.as_str()), "brand wrote {}", p.id);
        }
    }
}

#[test]
fn post_languages_follow_the_mix() {
    let (s, _) = world();
    let n = s.posts.len();
    let count = |l: &str| s.posts.iter().filter(|p| p.lang == l).count();
    let (zh, en, mixed) = (
        share(count("zh"), n),
        share(count("en"), n),
        share(count("mixed"), n),
    );
    assert!((zh - 0.65).abs() < 0.03, "zh {zh}");
    assert!((en - 0.25).abs() < 0.03, "en {en}");
    assert!((mixed - 0.10).abs() < 0.03, "mixed {mixed}");
    assert_eq!(count("zh") + count("en") + count("mixed"), n);

    // The newcomers arrived in the last week: English is over-represented there.
    let recent: Vec<_> = s
        .posts
        .iter()
        .filter(|p| p.created_at >= WAVE_START)
        .collect();
    let recent_en = share(
        recent.iter().filter(|p| p.lang == "en").count(),
        recent.len(),
    );
    assert!(recent_en > 0.5, "recent en share {recent_en}");
}

#[test]
fn users_are_mostly_existing_chinese_speakers_plus_a_recent_wave() {
    let (s, _) = world();
    let n = s.users.len();
    let zh: Vec<_> = s.users.iter().filter(|u| u.langs == ["zh"]).collect();
    let en: Vec<_> = s.users.iter().filter(|u| u.langs == ["en"]).collect();
    let bi = s.users.iter().filter(|u| u.langs == ["zh", "en"]).count();
    assert_eq!(zh.len() + en.len() + bi, n);
    assert!((share(zh.len(), n) - 0.70).abs() < 0.02);
    assert!((share(en.len(), n) - 0.25).abs() < 0.02);
    assert!(bi > 0);
    assert!(zh.iter().all(|u| u.created_at < WAVE_START));
    assert!(
        en.iter()
            .all(|u| (DEMO_NOW - 7 * DAY..=DEMO_NOW).contains(&u.created_at))
    );
    let refugees = en
        .iter()
        .filter(|u| u.follows.iter().any(|t| t == "tiktokrefugee"))
        .count();
    assert!(share(refugees, en.len()) > 0.5);
    let zh_refugees = zh
        .iter()
        .filter(|u| u.follows.iter().any(|t| t == "tiktokrefugee"))
        .count();
    assert!(share(zh_refugees, zh.len()) < 0.1);
}

#[test]
fn counters_are_consistent() {
    let (s, _) = world();
    for p in &s.posts {
        let st = &p.stats;
        for c in [
            st.likes,
            st.saves,
            st.comments,
            st.shares,
            st.hides,
            st.reports,
        ] {
            assert!(c <= st.views, "{}: {st:?}", p.id);
        }
    }
    let total_views: u64 = s.posts.iter().map(|p| p.stats.views).sum();
    assert!(total_views > 100 * s.posts.len() as u64);
}

#[test]
fn clickbait_gets_views_but_not_saves() {
    let (s, truth) = world();
    let (mut bait_views, mut bait_rate, mut views, mut rate) = (vec![], vec![], vec![], vec![]);
    for (p, &cb) in s.posts.iter().zip(&truth.post_clickbait) {
        if p.kind != PostKind::Organic || p.stats.views == 0 {
            continue;
        }
        let v = p.stats.views as f64;
        let r = p.stats.saves as f64 / v;
        if cb {
            bait_views.push(v);
            bait_rate.push(r);
        } else {
            views.push(v);
            rate.push(r);
        }
    }
    let (bv, v) = (median(bait_views), median(views));
    let (br, r) = (median(bait_rate), median(rate));
    assert!(bv > 2.0 * v, "clickbait median views {bv} vs {v}");
    assert!(br < 0.5 * r, "clickbait median saves/view {br} vs {r}");
}

#[test]
fn ads_are_rarely_saved_and_often_hidden() {
    let (s, truth) = world();
    let rates = |kind: PostKind| {
        let (mut saves, mut hides, mut views) = (0u64, 0u64, 0u64);
        let plain = s
            .posts
            .iter()
            .zip(&truth.post_clickbait)
            .filter(|(_, cb)| !**cb);
        for (p, _) in plain.filter(|(p, _)| p.kind == kind) {
            saves += p.stats.saves;
            hides += p.stats.hides;
            views += p.stats.views;
        }
        (saves as f64 / views as f64, hides as f64 / views as f64)
    };
    let (ad_save, ad_hide) = rates(PostKind::Ad);
    let (save, hide) = rates(PostKind::Organic);
    assert!(ad_save < 0.5 * save, "ad saves/view {ad_save} vs {save}");
    assert!(ad_hide > 2.0 * hide, "ad hides/view {ad_hide} vs {hide}");
}

#[test]
fn hidden_quality_shows_in_saves_per_view() {
    let (s, truth) = world();
    let (mut q, mut saves, mut hides, mut views) = (vec![], vec![], vec![], vec![]);
    for (p, &quality) in s.posts.iter().zip(&truth.post_quality) {
        assert!(quality > 0.0 && quality < 1.0);
        if p.stats.views >= 200 {
            let v = p.stats.views as f64;
            q.push(quality as f64);
            saves.push(p.stats.saves as f64 / v);
            hides.push(p.stats.hides as f64 / v);
            views.push(v.ln());
        }
    }
    assert!(q.len() > 1000);
    let r_saves = pearson(&q, &saves);
    let r_hides = pearson(&q, &hides);
    let r_views = pearson(&q, &views);
    assert!(r_saves > 0.4, "corr(q, saves/view) = {r_saves}");
    assert!(r_hides < -0.3, "corr(q, hides/view) = {r_hides}");
    // Views are a much weaker (and, through clickbait, misleading) signal.
    assert!(r_views < r_saves - 0.2, "corr(q, ln views) = {r_views}");
}

#[test]
fn vectors_are_unit_and_finite() {
    let (s, _) = world();
    for m in [&s.post_vectors, &s.user_vectors, &s.hashtag_vectors] {
        for row in m.rows() {
            let norm = dot(row, row).sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
            assert!(row.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn posts_cluster_by_topic_then_language() {
    let (s, truth) = world();
    let v = &s.post_vectors;
    let n = s.posts.len();
    let (mut same, mut same_n, mut diff, mut diff_n) = (0.0, 0, 0.0, 0);
    let (mut same_lang, mut same_lang_n, mut other_lang, mut other_lang_n) = (0.0, 0, 0.0, 0);
    // A fixed stride walks many pairs without randomness.
    for i in (0..n).step_by(7) {
        for j in (i + 1..n).step_by(53) {
            let c = dot(v.row(i), v.row(j));
            if truth.post_topic[i] == truth.post_topic[j] {
                same += c;
                same_n += 1;
                let (a, b) = (&s.posts[i].lang, &s.posts[j].lang);
                if a == b {
                    same_lang += c;
                    same_lang_n += 1;
                } else if a != "mixed" && b != "mixed" {
                    other_lang += c;
                    other_lang_n += 1;
                }
            } else {
                diff += c;
                diff_n += 1;
            }
        }
    }
    let (same, diff) = (same / same_n as f64, diff / diff_n as f64);
    assert!(same_n > 500 && diff_n > 5000);
    assert!(same > diff + 0.3, "same topic {same}, different {diff}");
    let (sl, ol) = (
        same_lang / same_lang_n as f64,
        other_lang / other_lang_n as f64,
    );
    assert!(sl > ol + 0.05, "same topic: same lang {sl}, zh vs en {ol}");
}

#[test]
fn hashtag_vectors_sit_near_their_topic() {
    let (s, truth) = world();
    let mut hits = 0;
    let mut total = 0;
    for (i, topic) in truth.hashtag_topic.iter().enumerate() {
        let Some(topic) = topic else { continue };
        // Nearest topic = the topic whose posts' mean vector is most similar.
        let best = (0..truth.topics.len())
            .map(|t| {
                let mut sum = 0.0;
                let mut k = 0;
                for (p, &pt) in truth.post_topic.iter().enumerate().step_by(5) {
                    if pt == t {
                        sum += dot(s.hashtag_vectors.row(i), s.post_vectors.row(p));
                        k += 1;
                    }
                }
                (t, sum / k.max(1) as f64)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0;
        hits += usize::from(best == *topic);
        total += 1;
    }
    assert!(share(hits, total) > 0.9, "{hits}/{total}");
}

#[test]
fn users_nearest_posts_are_in_their_topics() {
    let (s, truth) = world();
    let k = 10;
    let (mut hits, mut total) = (0, 0);
    for u in (0..s.users.len()).step_by(15) {
        let user = s.user_vectors.row(u);
        let mut scored: Vec<(f64, usize)> = (0..s.posts.len())
            .map(|p| (dot(user, s.post_vectors.row(p)), p))
            .collect();
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, p) in scored.iter().take(k) {
            hits += usize::from(truth.user_topics[u].contains(&truth.post_topic[p]));
            total += 1;
        }
    }
    assert!(total >= 400);
    assert!(
        share(hits, total) > 0.8,
        "{hits}/{total} in preferred topics"
    );
}

#[test]
fn written_snapshot_lists_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = DemoConfig {
        posts: 300,
        users: 20,
        seed: 5,
        dim: 8,
    };
    let s = generate(&config).unwrap();
    s.write_to(dir.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_version"], "demo-5");
    assert_eq!(manifest["files"].as_object().unwrap().len(), 6);
    let posts = std::fs::read_to_string(dir.path().join("posts.jsonl")).unwrap();
    assert_eq!(posts.lines().count(), 300);
    let first: serde_json::Value = serde_json::from_str(posts.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], "p_000001");
}
