//! The snapshot contract: every defect it lists is rejected with the right file, line and
//! field, and everything the writer produces loads back unchanged.
//!
//! Each rejection test writes a small valid snapshot, breaks exactly one thing (re-sealing
//! the manifest checksum unless the checksum is the point), and checks the reported issue.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use feedrank::snapshot::{
    self, Hashtag, Issue, MAX_ID_BYTES, MAX_ISSUES, MAX_TAG_BYTES, Manifest, Metric, Post,
    PostKind, Snapshot, Stats, Summary, User, is_normalised_hashtag, normalise_hashtag, sha256_hex,
};
use ndarray::{Array2, array};
use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

fn post(id: &str, author: &str, lang: &str, tags: &[&str], kind: PostKind, t: i64) -> Post {
    Post {
        id: id.into(),
        author: author.into(),
        lang: lang.into(),
        hashtags: tags.iter().map(|s| s.to_string()).collect(),
        kind,
        created_at: t,
        stats: Stats::default(),
    }
}

/// A small valid snapshot: 4 posts, 2 users, 3 hashtags, dim 4, cosine.
fn sample() -> Snapshot {
    let mut p1 = post(
        "p_1",
        "a_1",
        "en",
        &["cats", "tiktokrefugee"],
        PostKind::Organic,
        1_737_244_800,
    );
    p1.stats = Stats {
        views: 1200,
        likes: 80,
        saves: 40,
        comments: 12,
        shares: 3,
        hides: 1,
        reports: 0,
    };
    let mut p2 = post(
        "p_2",
        "a_2",
        "zh",
        &["猫", "cats"],
        PostKind::Sponsored,
        1_737_158_400,
    );
    p2.stats.views = 10;
    let posts = vec![
        p1,
        p2,
        post("p_3", "a_1", "mixed", &[], PostKind::Ad, 1_737_000_000),
        post(
            "p_4",
            "a_3",
            "pt-br",
            &["café"],
            PostKind::Organic,
            1_700_000_000,
        ),
    ];
    let users = vec![
        User {
            id: "u_1".into(),
            langs: vec!["en".into()],
            created_at: 1_737_244_800,
            follows: vec!["cats".into(), "travel".into()],
        },
        User {
            id: "u_2".into(),
            langs: vec!["zh".into(), "en".into()],
            created_at: 1_600_000_000,
            follows: vec![],
        },
    ];
    let hashtags = vec![
        Hashtag {
            tag: "cats".into(),
            display: BTreeMap::from([("en".into(), "#cats".into()), ("zh".into(), "#猫".into())]),
        },
        Hashtag {
            tag: "猫".into(),
            display: BTreeMap::new(),
        },
        Hashtag {
            tag: "café".into(),
            display: BTreeMap::from([("fr".into(), "#Café".into())]),
        },
    ];
    Snapshot {
        manifest: Manifest {
            format_version: 1,
            model_version: "2025-01-19.1".into(),
            created_at: "2025-01-19T08:00:00Z".into(),
            dim: 4,
            metric: Metric::Cosine,
            files: BTreeMap::new(),
            scoring: serde_json::Map::new(),
        },
        posts,
        post_vectors: array![
            [1.0, 2.0, 3.0, 4.0],
            [0.0, -1.0, 0.0, 0.0],
            [3.0, 0.0, 4.0, 0.0],
            [0.5, 0.5, 0.5, 0.5]
        ],
        users,
        user_vectors: array![[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
        hashtags,
        hashtag_vectors: array![
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0]
        ],
    }
}

/// A snapshot written to a temporary directory, with helpers to break it.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::of(&sample())
    }

    fn of(snapshot: &Snapshot) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        snapshot.write_to(dir.path()).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap()
    }

    fn text(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).unwrap()
    }

    /// Replaces a file without touching the manifest (for checksum tests).
    fn write_raw(&self, name: &str, bytes: impl AsRef<[u8]>) {
        fs::write(self.path(name), bytes).unwrap();
    }

    /// Replaces a data file and re-seals its checksum in the manifest, so that only the
    /// defect put into the content is left.
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        self.write_raw(name, bytes);
        let sha = sha256_hex(bytes);
        self.edit_manifest(|m| m["files"][name] = json!(sha));
    }

    fn remove(&self, name: &str) {
        fs::remove_file(self.path(name)).unwrap();
    }

    fn unlist(&self, name: &str) {
        self.edit_manifest(|m| {
            m["files"].as_object_mut().unwrap().remove(name);
        });
    }

    fn manifest(&self) -> Value {
        serde_json::from_slice(&self.read("manifest.json")).unwrap()
    }

    fn edit_manifest(&self, edit: impl FnOnce(&mut Value)) {
        let mut m = self.manifest();
        edit(&mut m);
        self.write_raw("manifest.json", serde_json::to_vec_pretty(&m).unwrap());
    }

    /// Replaces 1-based line `line` of a JSONL file (re-sealing the checksum).
    fn set_line(&self, name: &str, line: usize, new: &str) {
        let text = self.text(name);
        let mut lines: Vec<&str> = text.lines().collect();
        lines[line - 1] = new;
        self.write(name, lines.join("\n") + "\n");
    }

    /// Edits 1-based line `line` of a JSONL file as a JSON value (re-sealing the checksum).
    fn edit_record(&self, name: &str, line: usize, edit: impl FnOnce(&mut Value)) {
        let text = self.text(name);
        let mut v: Value = serde_json::from_str(text.lines().nth(line - 1).unwrap()).unwrap();
        edit(&mut v);
        self.set_line(name, line, &v.to_string());
    }

    /// Rewrites a matrix file with the given values (re-sealing the checksum).
    fn write_matrix(&self, name: &str, m: &Array2<f32>) {
        let mut bytes = Vec::new();
        snapshot::npy::write_f32_matrix(&mut bytes, m).unwrap();
        self.write(name, bytes);
    }

    fn load(&self) -> Snapshot {
        snapshot::load(self.dir.path()).unwrap_or_else(|e| panic!("{e}: {:#?}", e.issues()))
    }

    fn issues(&self) -> Vec<Issue> {
        match snapshot::load(self.dir.path()) {
            Ok(_) => panic!("the snapshot should have been rejected"),
            Err(e) => e.issues().to_vec(),
        }
    }
}

/// An `.npy` file with an arbitrary header dictionary, for dtypes and shapes the writer
/// cannot produce.
fn npy_raw(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn matches(i: &Issue, file: &str, line: Option<usize>, field: Option<&str>, phrase: &str) -> bool {
    i.file == file && i.line == line && i.field.as_deref() == field && i.message.contains(phrase)
}

/// Asserts that `issues` holds exactly one issue, and that it is the expected one.
#[track_caller]
fn assert_only(
    issues: &[Issue],
    file: &str,
    line: Option<usize>,
    field: Option<&str>,
    phrase: &str,
) {
    assert!(
        issues.len() == 1 && matches(&issues[0], file, line, field, phrase),
        "expected only {file}:{line:?} {field:?} containing {phrase:?}, got {issues:#?}"
    );
}

/// Asserts that `issues` contains the expected issue (others may accompany it).
#[track_caller]
fn assert_has(
    issues: &[Issue],
    file: &str,
    line: Option<usize>,
    field: Option<&str>,
    phrase: &str,
) {
    assert!(
        issues.iter().any(|i| matches(i, file, line, field, phrase)),
        "expected {file}:{line:?} {field:?} containing {phrase:?}, got {issues:#?}"
    );
}

fn norm(row: ndarray::ArrayView1<f32>) -> f32 {
    row.iter().map(|v| v * v).sum::<f32>().sqrt()
}

// ---------------------------------------------------------------------------------------
// Acceptance
// ---------------------------------------------------------------------------------------

#[test]
fn valid_snapshot_loads() {
    let expected = sample();
    let fx = Fixture::new();
    let loaded = fx.load();
    assert_eq!(loaded.posts, expected.posts);
    assert_eq!(loaded.users, expected.users);
    assert_eq!(loaded.hashtags, expected.hashtags);
    assert_eq!(loaded.model_version(), "2025-01-19.1");
    assert_eq!(loaded.manifest.created_at, "2025-01-19T08:00:00Z");
    assert_eq!(loaded.dim(), 4);
    assert_eq!(loaded.metric(), Metric::Cosine);
    assert_eq!(loaded.manifest.files.len(), 6);
    assert_eq!(loaded.post_vectors.dim(), (4, 4));
    assert_eq!(loaded.user_vectors.dim(), (2, 4));
    assert_eq!(loaded.hashtag_vectors.dim(), (3, 4));
}

#[test]
fn cosine_normalises_every_row() {
    let expected = sample();
    let loaded = Fixture::new().load();
    for (given, got) in [
        (&expected.post_vectors, &loaded.post_vectors),
        (&expected.user_vectors, &loaded.user_vectors),
        (&expected.hashtag_vectors, &loaded.hashtag_vectors),
    ] {
        for (g, l) in given.rows().into_iter().zip(got.rows()) {
            assert!((norm(l) - 1.0).abs() < 1e-6, "{l}");
            let n = norm(g);
            for (a, b) in g.iter().zip(l.iter()) {
                assert!((a / n - b).abs() < 1e-6, "{g} vs {l}");
            }
        }
    }
    assert_eq!(
        loaded.post_vectors.row(2).to_vec(),
        vec![0.6, 0.0, 0.8, 0.0]
    );
}

#[test]
fn dot_keeps_vectors_as_given_and_accepts_zero_rows() {
    let mut s = sample();
    s.manifest.metric = Metric::Dot;
    s.post_vectors.row_mut(1).fill(0.0);
    let loaded = Fixture::of(&s).load();
    assert_eq!(loaded.metric(), Metric::Dot);
    assert_eq!(loaded.post_vectors, s.post_vectors);
    assert_eq!(loaded.user_vectors, s.user_vectors);
    assert_eq!(loaded.hashtag_vectors, s.hashtag_vectors);
}

#[test]
fn optional_pairs_may_be_absent() {
    let mut s = sample();
    s.users.clear();
    s.user_vectors = Array2::zeros((0, 4));
    s.hashtags.clear();
    s.hashtag_vectors = Array2::zeros((0, 4));
    let fx = Fixture::of(&s);
    assert!(!fx.path("users.npy").exists() && !fx.path("hashtags.jsonl").exists());
    let loaded = fx.load();
    assert!(loaded.users.is_empty() && loaded.hashtags.is_empty());
    assert_eq!(loaded.user_vectors.dim(), (0, 4));
    assert_eq!(loaded.hashtag_vectors.dim(), (0, 4));
    assert_eq!(loaded.posts.len(), 4);
}

#[test]
fn missing_stats_default_to_zero() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 1, |p| {
        p.as_object_mut().unwrap().remove("stats");
    });
    fx.edit_record("posts.jsonl", 2, |p| p["stats"] = json!({"likes": 7}));
    fx.edit_record("posts.jsonl", 3, |p| {
        p.as_object_mut().unwrap().remove("hashtags");
    });
    let loaded = fx.load();
    assert_eq!(loaded.posts[0].stats, Stats::default());
    assert_eq!(
        loaded.posts[1].stats,
        Stats {
            likes: 7,
            ..Stats::default()
        }
    );
    assert!(loaded.posts[2].hashtags.is_empty());
}

#[test]
fn unicode_display_forms_round_trip() {
    let mut s = sample();
    s.hashtags[1].display = BTreeMap::from([
        ("ja".into(), "#ねこ".into()),
        ("zh-hant".into(), "#貓".into()),
        ("ar".into(), "#قطط".into()),
        ("mixed".into(), "#🐈 cats".into()),
    ]);
    let loaded = Fixture::of(&s).load();
    assert_eq!(loaded.hashtags, s.hashtags);
}

#[test]
fn language_codes_load_in_lower_case() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 4, |p| p["lang"] = json!("pt-BR"));
    fx.edit_record("users.jsonl", 2, |u| u["langs"] = json!(["ZH-Hant", "EN"]));
    fx.edit_record("hashtags.jsonl", 1, |h| {
        h["display"] = json!({"EN": "#Cats"})
    });
    let loaded = fx.load();
    assert_eq!(loaded.posts[3].lang, "pt-br");
    assert_eq!(loaded.users[1].langs, ["zh-hant", "en"]);
    assert_eq!(
        loaded.hashtags[0].display,
        BTreeMap::from([("en".into(), "#Cats".into())])
    );
}

#[test]
fn limits_are_inclusive() {
    let mut s = sample();
    s.posts[0].id = "i".repeat(MAX_ID_BYTES);
    s.posts[0].author = "é".repeat(MAX_ID_BYTES / 2);
    s.posts[0].hashtags = vec!["t".repeat(MAX_TAG_BYTES)];
    let loaded = Fixture::of(&s).load();
    assert_eq!(loaded.posts[0], s.posts[0]);
}

#[test]
fn scoring_overrides_are_kept_raw() {
    let fx = Fixture::new();
    let scoring = json!({"weights": {"saves": 2.5}, "ad_every": 8});
    fx.edit_manifest(|m| m["scoring"] = scoring.clone());
    assert_eq!(Value::Object(fx.load().manifest.scoring), scoring);
    fx.edit_manifest(|m| {
        m.as_object_mut().unwrap().remove("scoring");
    });
    assert!(fx.load().manifest.scoring.is_empty());
}

#[test]
fn summary_counts_and_spans() {
    let loaded = Fixture::new().load();
    let summary = Summary::of(&loaded);
    assert_eq!((summary.posts, summary.users, summary.hashtags), (4, 2, 3));
    assert_eq!((summary.dim, summary.metric), (4, Metric::Cosine));
    assert_eq!(summary.posts_by_lang[0].1, 1);
    assert_eq!(summary.posts_by_lang.len(), 4);
    assert_eq!(
        summary.posts_by_kind,
        vec![
            (PostKind::Organic, 2),
            (PostKind::Ad, 1),
            (PostKind::Sponsored, 1)
        ]
    );
    assert_eq!(summary.top_hashtags[0], ("cats".to_string(), 2));
    assert_eq!(summary.top_hashtags.len(), 4);
    assert_eq!(summary.post_time_span, Some((1_700_000_000, 1_737_244_800)));
    let text = summary.to_string();
    for expected in [
        "2025-01-19.1",
        "4-d, cosine",
        "organic",
        "50.0%",
        "2023-11-14 to 2025-01-19 (UTC)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn summary_lists_at_most_ten_hashtags() {
    let mut s = sample();
    let tags: Vec<String> = (0..15).map(|i| format!("tag{i:02}")).collect();
    s.posts[0].hashtags = tags.clone();
    s.posts[1].hashtags = tags[..3].to_vec();
    s.posts[3].hashtags.clear();
    let summary = Summary::of(&s);
    assert_eq!(summary.top_hashtags.len(), 10);
    assert_eq!(summary.top_hashtags[0], ("tag00".to_string(), 2));
    assert_eq!(summary.top_hashtags[3], ("tag03".to_string(), 1));
}

// ---------------------------------------------------------------------------------------
// Files: presence, pairs, listing, checksums
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_missing_manifest() {
    let fx = Fixture::new();
    fx.remove("manifest.json");
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        None,
        "missing required file",
    );
}

#[test]
fn rejects_missing_posts_npy() {
    let fx = Fixture::new();
    fx.remove("posts.npy");
    // Still listed in `files`: reported once, as the missing file.
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        None,
        "missing required file",
    );
}

#[test]
fn rejects_missing_posts_jsonl() {
    let fx = Fixture::new();
    fx.remove("posts.jsonl");
    fx.unlist("posts.jsonl");
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        None,
        None,
        "missing required file",
    );
}

#[test]
fn rejects_users_npy_without_users_jsonl() {
    let fx = Fixture::new();
    fx.remove("users.jsonl");
    fx.unlist("users.jsonl");
    assert_only(&fx.issues(), "users.jsonl", None, None, "come as a pair");
}

#[test]
fn rejects_hashtags_jsonl_without_hashtags_npy() {
    let fx = Fixture::new();
    fx.remove("hashtags.npy");
    assert_only(
        &fx.issues(),
        "hashtags.npy",
        None,
        None,
        "hashtags.jsonl is present",
    );
}

#[test]
fn reports_unreadable_files() {
    let fx = Fixture::new();
    for name in ["users.npy", "posts.jsonl"] {
        fx.remove(name);
        fs::create_dir(fx.path(name)).unwrap();
    }
    let issues = fx.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_has(&issues, "users.npy", None, None, "cannot read");
    assert_has(&issues, "posts.jsonl", None, None, "cannot read");
}

#[test]
fn rejects_data_file_not_listed() {
    let fx = Fixture::new();
    fx.unlist("hashtags.jsonl");
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("files.hashtags.jsonl"),
        "present but not listed",
    );
}

#[test]
fn rejects_listed_file_that_is_absent() {
    let fx = Fixture::new();
    fx.remove("users.npy");
    fx.remove("users.jsonl");
    let issues = fx.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_has(
        &issues,
        "manifest.json",
        None,
        Some("files.users.npy"),
        "absent",
    );
    assert_has(
        &issues,
        "manifest.json",
        None,
        Some("files.users.jsonl"),
        "absent",
    );
}

#[test]
fn rejects_unknown_file_in_manifest() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["files"]["index.bin"] = json!("00".repeat(32)));
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("files.index.bin"),
        "unknown file",
    );
}

#[test]
fn rejects_malformed_checksum() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["files"]["posts.npy"] = json!("abc"));
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("files.posts.npy"),
        "64 hex",
    );
}

#[test]
fn rejects_checksum_mismatch() {
    let fx = Fixture::new();
    let changed = fx
        .text("posts.jsonl")
        .replace("\"views\":1200", "\"views\":1201");
    fx.write_raw("posts.jsonl", changed);
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("files.posts.jsonl"),
        "checksum mismatch",
    );
}

#[test]
fn rejects_checksum_mismatch_of_npy() {
    let fx = Fixture::new();
    let mut bytes = fx.read("users.npy");
    *bytes.last_mut().unwrap() ^= 1;
    fx.write_raw("users.npy", bytes);
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("files.users.npy"),
        "checksum mismatch",
    );
}

// ---------------------------------------------------------------------------------------
// .npy arrays
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_dim_disagreeing_with_npy_shape() {
    let fx = Fixture::new();
    fx.write_matrix("posts.npy", &Array2::ones((4, 5)));
    assert_only(&fx.issues(), "posts.npy", None, Some("shape"), "`dim` is 4");
}

#[test]
fn rejects_manifest_dim_disagreeing_with_every_npy() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["dim"] = json!(8));
    let issues = fx.issues();
    assert_eq!(issues.len(), 3, "{issues:#?}");
    for file in ["posts.npy", "users.npy", "hashtags.npy"] {
        assert_has(
            &issues,
            file,
            None,
            Some("shape"),
            "has 4 columns but manifest.json `dim` is 8",
        );
    }
}

#[test]
fn rejects_row_count_disagreeing_with_jsonl() {
    let fx = Fixture::new();
    let text = fx.text("posts.jsonl");
    let three: Vec<&str> = text.lines().take(3).collect();
    fx.write("posts.jsonl", three.join("\n") + "\n");
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        Some("shape"),
        "4 rows but posts.jsonl has 3 lines",
    );
}

#[test]
fn rejects_float64_array() {
    let fx = Fixture::new();
    let data: Vec<u8> = (0..16)
        .flat_map(|i| (i as f64 + 1.0).to_le_bytes())
        .collect();
    fx.write(
        "posts.npy",
        npy_raw(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 4), }",
            &data,
        ),
    );
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        Some("descr"),
        "`<f8` is not float32",
    );
}

#[test]
fn rejects_one_dimensional_array() {
    let fx = Fixture::new();
    let data: Vec<u8> = (0..16)
        .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
        .collect();
    fx.write(
        "posts.npy",
        npy_raw(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (16,), }",
            &data,
        ),
    );
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        Some("shape"),
        "(16,) is 1-D",
    );
}

#[test]
fn rejects_three_dimensional_array() {
    let fx = Fixture::new();
    let data: Vec<u8> = (0..16)
        .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
        .collect();
    fx.write(
        "users.npy",
        npy_raw(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 4), }",
            &data,
        ),
    );
    assert_only(
        &fx.issues(),
        "users.npy",
        None,
        Some("shape"),
        "(2, 2, 4) is 3-D",
    );
}

#[test]
fn rejects_fortran_order() {
    let fx = Fixture::new();
    let data: Vec<u8> = (0..16)
        .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
        .collect();
    fx.write(
        "posts.npy",
        npy_raw(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 4), }",
            &data,
        ),
    );
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        Some("fortran_order"),
        "Fortran order",
    );
}

#[test]
fn rejects_non_npy_file() {
    let fx = Fixture::new();
    fx.write("hashtags.npy", "1,2,3,4\n");
    assert_only(
        &fx.issues(),
        "hashtags.npy",
        None,
        Some("magic"),
        "not an .npy file",
    );
}

#[test]
fn rejects_truncated_data() {
    let fx = Fixture::new();
    let bytes = fx.read("posts.npy");
    fx.write("posts.npy", &bytes[..bytes.len() - 3]);
    assert_only(
        &fx.issues(),
        "posts.npy",
        None,
        None,
        "truncated: shape (4, 4) of float32 needs 64",
    );
}

#[test]
fn rejects_extra_data_bytes() {
    let fx = Fixture::new();
    let mut bytes = fx.read("posts.npy");
    bytes.extend_from_slice(&1.0f32.to_le_bytes());
    fx.write("posts.npy", bytes);
    assert_only(&fx.issues(), "posts.npy", None, None, "extra bytes");
}

#[test]
fn rejects_nan() {
    let fx = Fixture::new();
    let mut m = sample().post_vectors;
    m[[1, 3]] = f32::NAN;
    fx.write_matrix("posts.npy", &m);
    assert_only(
        &fx.issues(),
        "posts.npy",
        Some(2),
        None,
        "row 2 (numpy index [1, 3]) is NaN",
    );
}

#[test]
fn rejects_infinite_values() {
    let fx = Fixture::new();
    let mut m = sample().user_vectors;
    m[[0, 0]] = f32::NEG_INFINITY;
    fx.write_matrix("users.npy", &m);
    assert_only(
        &fx.issues(),
        "users.npy",
        Some(1),
        None,
        "row 1 (numpy index [0, 0]) is infinite",
    );
}

#[test]
fn rejects_zero_vector_under_cosine() {
    let fx = Fixture::new();
    let mut m = sample().hashtag_vectors;
    m.row_mut(2).fill(0.0);
    fx.write_matrix("hashtags.npy", &m);
    assert_only(
        &fx.issues(),
        "hashtags.npy",
        Some(3),
        None,
        "row 3 (numpy index [2]) is a zero vector",
    );
}

// ---------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_malformed_manifest_json() {
    let fx = Fixture::new();
    let text = fx.text("manifest.json");
    let dim_line = text.lines().position(|l| l.contains("\"dim\"")).unwrap() + 1;
    // Dropping the comma after `dim` leaves the parser stuck at the start of the next line.
    fx.write_raw("manifest.json", text.replace("\"dim\": 4,", "\"dim\": 4"));
    assert_only(
        &fx.issues(),
        "manifest.json",
        Some(dim_line + 1),
        None,
        "malformed JSON",
    );
}

#[test]
fn rejects_manifest_that_is_not_an_object() {
    let fx = Fixture::new();
    fx.write_raw("manifest.json", "[1]");
    assert_only(
        &fx.issues(),
        "manifest.json",
        Some(1),
        None,
        "expected a JSON object",
    );
}

#[test]
fn rejects_unknown_format_version() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["format_version"] = json!(2));
    // Nothing else is checked against a format this build does not know.
    fx.remove("posts.npy");
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("format_version"),
        "unsupported format_version 2",
    );
}

#[test]
fn rejects_unknown_metric() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["metric"] = json!("l2"));
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("metric"),
        "unknown metric \"l2\", expected one of cosine, dot",
    );
}

#[test]
fn rejects_unknown_manifest_key() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| m["dims"] = json!(4));
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("dims"),
        "unknown key `dims`",
    );
}

#[test]
fn rejects_missing_manifest_field() {
    let fx = Fixture::new();
    fx.edit_manifest(|m| {
        m.as_object_mut().unwrap().remove("model_version");
    });
    assert_only(
        &fx.issues(),
        "manifest.json",
        None,
        Some("model_version"),
        "required field is missing",
    );
}

#[test]
fn rejects_bad_manifest_values() {
    for (key, value, phrase) in [
        ("dim", json!(0), "positive integer"),
        ("dim", json!(4.5), "positive integer"),
        ("created_at", json!("2025-01-19T08:00:00"), "RFC 3339"),
        ("model_version", json!(""), "non-empty string"),
        (
            "files",
            json!(["posts.npy"]),
            "JSON object mapping file names",
        ),
        ("scoring", json!([1]), "must be a JSON object"),
    ] {
        let fx = Fixture::new();
        fx.edit_manifest(|m| m[key] = value.clone());
        let issues = fx.issues();
        // A broken `dim` or `files` cannot be compared with the files: one issue only.
        assert_only(&issues, "manifest.json", None, Some(key), phrase);
    }
}

// ---------------------------------------------------------------------------------------
// JSONL records
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_malformed_jsonl_line() {
    let fx = Fixture::new();
    fx.set_line("posts.jsonl", 2, r#"{"id": "p_2", "author": "a_2""#);
    assert_only(&fx.issues(), "posts.jsonl", Some(2), None, "malformed JSON");
}

#[test]
fn keeps_checking_after_a_bad_line() {
    let fx = Fixture::new();
    fx.set_line("posts.jsonl", 1, "not json");
    fx.edit_record("posts.jsonl", 3, |p| p["kind"] = json!("promo"));
    fx.edit_record("users.jsonl", 2, |u| u["id"] = json!(""));
    let issues = fx.issues();
    assert_eq!(issues.len(), 3, "{issues:#?}");
    assert_has(&issues, "posts.jsonl", Some(1), None, "malformed JSON");
    assert_has(&issues, "posts.jsonl", Some(3), Some("kind"), "promo");
    assert_has(
        &issues,
        "users.jsonl",
        Some(2),
        Some("id"),
        "must not be empty",
    );
}

#[test]
fn rejects_blank_line() {
    let fx = Fixture::new();
    let text = fx.text("posts.jsonl");
    fx.write("posts.jsonl", text.replacen('\n', "\n\n", 1));
    let issues = fx.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_has(&issues, "posts.jsonl", Some(2), None, "blank line");
    assert_has(
        &issues,
        "posts.npy",
        None,
        Some("shape"),
        "4 rows but posts.jsonl has 5 lines",
    );
}

#[test]
fn rejects_trailing_blank_line() {
    let fx = Fixture::new();
    let text = fx.text("hashtags.jsonl");
    fx.write("hashtags.jsonl", text + "\n");
    let issues = fx.issues();
    assert_has(&issues, "hashtags.jsonl", Some(4), None, "blank line");
}

#[test]
fn rejects_empty_posts() {
    let mut s = sample();
    s.posts.clear();
    s.post_vectors = Array2::zeros((0, 4));
    assert_only(
        &Fixture::of(&s).issues(),
        "posts.jsonl",
        None,
        None,
        "no posts",
    );
}

#[test]
fn rejects_duplicate_post_ids() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 3, |p| p["id"] = json!("p_1"));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(3),
        Some("id"),
        "duplicate post id `p_1` (first on line 1)",
    );
}

#[test]
fn rejects_duplicate_user_ids() {
    let fx = Fixture::new();
    fx.edit_record("users.jsonl", 2, |u| u["id"] = json!("u_1"));
    assert_only(
        &fx.issues(),
        "users.jsonl",
        Some(2),
        Some("id"),
        "duplicate user id `u_1`",
    );
}

#[test]
fn rejects_duplicate_hashtag_tags() {
    let fx = Fixture::new();
    fx.edit_record("hashtags.jsonl", 3, |h| h["tag"] = json!("cats"));
    assert_only(
        &fx.issues(),
        "hashtags.jsonl",
        Some(3),
        Some("tag"),
        "duplicate tag `cats` (first on line 1)",
    );
}

#[test]
fn rejects_duplicate_hashtag_within_a_post() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 1, |p| {
        p["hashtags"] = json!(["cats", "dogs", "cats"])
    });
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(1),
        Some("hashtags[2]"),
        "duplicate hashtag `cats`",
    );
}

#[test]
fn rejects_unknown_kind() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 2, |p| p["kind"] = json!("promo"));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(2),
        Some("kind"),
        "unknown kind `promo`, expected one of organic, ad, sponsored",
    );
}

#[test]
fn rejects_negative_stats() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 1, |p| p["stats"]["saves"] = json!(-3));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(1),
        Some("stats.saves"),
        "must be a non-negative integer, got -3",
    );
}

#[test]
fn rejects_fractional_stats() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 4, |p| p["stats"]["likes"] = json!(1.5));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(4),
        Some("stats.likes"),
        "got 1.5",
    );
}

#[test]
fn rejects_stats_given_as_strings() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 2, |p| p["stats"]["comments"] = json!("12"));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(2),
        Some("stats.comments"),
        "must be a non-negative integer, got the string \"12\"",
    );
}

#[test]
fn rejects_unknown_stats_key() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 1, |p| p["stats"]["savs"] = json!(3));
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(1),
        Some("stats.savs"),
        "unknown key `savs`",
    );
}

#[test]
fn rejects_unknown_record_keys() {
    for (file, key) in [
        ("posts.jsonl", "langs"),
        ("users.jsonl", "follow"),
        ("hashtags.jsonl", "displays"),
    ] {
        let fx = Fixture::new();
        fx.edit_record(file, 2, |r| r[key] = json!([]));
        assert_only(
            &fx.issues(),
            file,
            Some(2),
            Some(key),
            &format!("unknown key `{key}`"),
        );
    }
}

#[test]
fn rejects_missing_record_field() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 2, |p| {
        p.as_object_mut().unwrap().remove("kind");
    });
    assert_only(
        &fx.issues(),
        "posts.jsonl",
        Some(2),
        Some("kind"),
        "required field is missing",
    );
}

#[test]
fn rejects_created_at_in_milliseconds() {
    let fx = Fixture::new();
    fx.edit_record("users.jsonl", 1, |u| {
        u["created_at"] = json!(1_737_244_800_000i64)
    });
    assert_only(
        &fx.issues(),
        "users.jsonl",
        Some(1),
        Some("created_at"),
        "milliseconds",
    );
}

#[test]
fn rejects_empty_and_overlong_ids() {
    for (value, phrase) in [
        (String::new(), "must not be empty"),
        (
            "x".repeat(MAX_ID_BYTES + 1),
            "65 bytes, longer than the 64-byte limit",
        ),
    ] {
        let fx = Fixture::new();
        fx.edit_record("posts.jsonl", 2, |p| p["id"] = json!(value));
        assert_only(&fx.issues(), "posts.jsonl", Some(2), Some("id"), phrase);
        fx.edit_record("posts.jsonl", 2, |p| p["id"] = json!("p_2"));
        fx.edit_record("users.jsonl", 1, |u| u["id"] = json!(value));
        assert_only(&fx.issues(), "users.jsonl", Some(1), Some("id"), phrase);
    }
}

#[test]
fn rejects_empty_and_overlong_authors() {
    // 22 three-byte characters: 66 bytes but only 22 characters.
    for (value, phrase) in [
        (String::new(), "must not be empty"),
        ("猫".repeat(22), "66 bytes"),
    ] {
        let fx = Fixture::new();
        fx.edit_record("posts.jsonl", 3, |p| p["author"] = json!(value));
        assert_only(&fx.issues(), "posts.jsonl", Some(3), Some("author"), phrase);
    }
}

#[test]
fn rejects_invalid_lang() {
    for (file, line, key, value, field) in [
        ("posts.jsonl", 1, "lang", json!("en_US"), "lang"),
        ("posts.jsonl", 1, "lang", json!("english"), "lang"),
        ("posts.jsonl", 1, "lang", json!(""), "lang"),
        ("users.jsonl", 2, "langs", json!(["zh", "e"]), "langs[1]"),
        (
            "hashtags.jsonl",
            1,
            "display",
            json!({"en": "#cats", "??": "#x"}),
            "display.??",
        ),
    ] {
        let fx = Fixture::new();
        fx.edit_record(file, line, |r| r[key] = value.clone());
        assert_only(
            &fx.issues(),
            file,
            Some(line),
            Some(field),
            "invalid language code",
        );
    }
}

#[test]
fn rejects_empty_display_form() {
    let fx = Fixture::new();
    fx.edit_record("hashtags.jsonl", 1, |h| h["display"] = json!({"en": " "}));
    assert_only(
        &fx.issues(),
        "hashtags.jsonl",
        Some(1),
        Some("display.en"),
        "must not be empty",
    );
}

#[test]
fn rejects_repeated_display_language() {
    let fx = Fixture::new();
    fx.set_line(
        "hashtags.jsonl",
        1,
        r##"{"tag": "cats", "display": {"en": "#cats", "EN": "#Cats"}}"##,
    );
    assert_only(
        &fx.issues(),
        "hashtags.jsonl",
        Some(1),
        Some("display.EN"),
        "more than once",
    );
}

#[test]
fn rejects_non_normalised_hashtags() {
    let long = "t".repeat(MAX_TAG_BYTES + 1);
    for (tag, phrase) in [
        ("Cats", "write `cats`"),
        ("#cats", "write `cats`"),
        ("ｃａｔｓ", "write `cats`"),
        ("cafe\u{301}", "write `café`"),
        ("", "empty hashtag"),
        (long.as_str(), "129 bytes, longer than the 128-byte limit"),
        ("new york", "whitespace"),
    ] {
        let fx = Fixture::new();
        fx.edit_record("posts.jsonl", 1, |p| p["hashtags"][1] = json!(tag));
        assert_only(
            &fx.issues(),
            "posts.jsonl",
            Some(1),
            Some("hashtags[1]"),
            phrase,
        );
    }
}

#[test]
fn rejects_non_normalised_follows_and_tags() {
    let fx = Fixture::new();
    fx.edit_record("users.jsonl", 1, |u| u["follows"][0] = json!("#Cats"));
    fx.edit_record("hashtags.jsonl", 2, |h| h["tag"] = json!("Café"));
    let issues = fx.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_has(
        &issues,
        "users.jsonl",
        Some(1),
        Some("follows[0]"),
        "write `cats`",
    );
    assert_has(
        &issues,
        "hashtags.jsonl",
        Some(2),
        Some("tag"),
        "write `café`",
    );
}

#[test]
fn caps_the_issue_list() {
    let mut s = sample();
    s.posts = (0..150)
        .map(|i| post(&format!("p{i}"), "a", "en", &[], PostKind::Ad, 0))
        .collect();
    s.post_vectors = Array2::ones((150, 4));
    let fx = Fixture::of(&s);
    let text = fx.text("posts.jsonl").replace("\"ad\"", "\"promo\"");
    fx.write("posts.jsonl", text);
    let issues = fx.issues();
    assert_eq!(issues.len(), MAX_ISSUES);
    assert!(
        issues[..MAX_ISSUES - 1]
            .iter()
            .all(|i| i.field.as_deref() == Some("kind"))
    );
    assert!(
        issues[MAX_ISSUES - 1].message.contains("too many problems"),
        "{issues:#?}"
    );
}

#[test]
fn issues_display_file_line_and_field() {
    let fx = Fixture::new();
    fx.edit_record("posts.jsonl", 1, |p| p["stats"]["saves"] = json!(-3));
    let err = snapshot::load(fx.dir.path()).unwrap_err();
    assert_eq!(
        err.issues()[0].to_string(),
        "posts.jsonl:1: field `stats.saves`: must be a non-negative integer, got -3"
    );
    assert!(err.to_string().contains("1 problem"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Round trip of random valid snapshots
// ---------------------------------------------------------------------------------------

const LANGS: [&str; 7] = ["en", "zh", "zh-hant", "pt-br", "mixed", "yue", "es-419"];

fn id_strategy() -> impl Strategy<Value = String> {
    // Letters and digits of any script; the index prefix added later keeps ids unique.
    "[\\p{L}\\p{N}_-]{1,12}"
}

fn tag_strategy() -> impl Strategy<Value = String> {
    "\\PC{1,10}"
        .prop_map(|s| normalise_hashtag(&s))
        .prop_filter("normalised", |t| is_normalised_hashtag(t))
}

fn unique_tags() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(tag_strategy(), 0..5).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|t| seen.insert(t.clone()));
        v
    })
}

fn stats_strategy() -> impl Strategy<Value = Stats> {
    prop::array::uniform7(prop_oneof![0..1000u64, any::<u64>()]).prop_map(|s| Stats {
        views: s[0],
        likes: s[1],
        saves: s[2],
        comments: s[3],
        shares: s[4],
        hides: s[5],
        reports: s[6],
    })
}

fn post_strategy() -> impl Strategy<Value = Post> {
    (
        id_strategy(),
        id_strategy(),
        prop::sample::select(LANGS.to_vec()),
        unique_tags(),
        prop::sample::select(vec![PostKind::Organic, PostKind::Ad, PostKind::Sponsored]),
        0..=snapshot::MAX_UNIX_SECONDS,
        stats_strategy(),
    )
        .prop_map(
            |(id, author, lang, hashtags, kind, created_at, stats)| Post {
                id,
                author,
                lang: lang.to_string(),
                hashtags,
                kind,
                created_at,
                stats,
            },
        )
}

fn user_strategy() -> impl Strategy<Value = User> {
    (
        id_strategy(),
        prop::sample::subsequence(LANGS.to_vec(), 0..3),
        0..=snapshot::MAX_UNIX_SECONDS,
        unique_tags(),
    )
        .prop_map(|(id, langs, created_at, follows)| User {
            id,
            langs: langs.into_iter().map(String::from).collect(),
            created_at,
            follows,
        })
}

fn hashtag_strategy() -> impl Strategy<Value = Hashtag> {
    (
        tag_strategy(),
        prop::collection::btree_map(
            prop::sample::select(LANGS.to_vec()).prop_map(String::from),
            "\\PC{1,12}".prop_filter("visible", |s: &String| !s.trim().is_empty()),
            0..3,
        ),
    )
        .prop_map(|(tag, display)| Hashtag { tag, display })
}

/// Rows of `dim` values; under cosine a zero row gets a 1 so that it is valid.
fn matrix(rows: usize, dim: usize, values: Vec<f32>, cosine: bool) -> Array2<f32> {
    let mut m = Array2::from_shape_vec((rows, dim), values).unwrap();
    if cosine {
        for mut row in m.rows_mut() {
            if row.iter().all(|v| *v == 0.0) {
                row[0] = 1.0;
            }
        }
    }
    m
}

fn snapshot_strategy() -> impl Strategy<Value = Snapshot> {
    (1usize..=8, any::<bool>()).prop_flat_map(|(dim, cosine)| {
        (
            prop::collection::vec(post_strategy(), 1..12),
            prop::collection::vec(user_strategy(), 0..5),
            prop::collection::vec(hashtag_strategy(), 0..5),
            prop::collection::vec(-1e3f32..1e3, 8 * 24),
            "[0-9a-z.-]{1,20}",
        )
            .prop_map(move |(mut posts, mut users, mut hashtags, pool, version)| {
                for (i, p) in posts.iter_mut().enumerate() {
                    p.id = format!("{i}{}", p.id);
                }
                for (i, u) in users.iter_mut().enumerate() {
                    u.id = format!("{i}{}", u.id);
                }
                let mut seen = std::collections::HashSet::new();
                hashtags.retain(|h| seen.insert(h.tag.clone()));
                let mut values = pool.into_iter().cycle();
                let mut take = |n: usize| {
                    let v: Vec<f32> = values.by_ref().take(n * dim).collect();
                    matrix(n, dim, v, cosine)
                };
                let (np, nu, nh) = (posts.len(), users.len(), hashtags.len());
                Snapshot {
                    manifest: Manifest {
                        format_version: 1,
                        model_version: version,
                        created_at: "2025-01-19T08:00:00.250+01:00".into(),
                        dim,
                        metric: if cosine { Metric::Cosine } else { Metric::Dot },
                        files: BTreeMap::new(),
                        scoring: serde_json::Map::new(),
                    },
                    posts,
                    post_vectors: take(np),
                    users,
                    user_vectors: take(nu),
                    hashtags,
                    hashtag_vectors: take(nh),
                }
            })
    })
}

fn normalised(m: &Array2<f32>) -> Array2<f32> {
    let mut out = m.clone();
    for mut row in out.rows_mut() {
        let n = row
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        row.mapv_inplace(|v| (f64::from(v) / n) as f32);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn writer_output_loads_back_equal(s in snapshot_strategy()) {
        let fx = Fixture::of(&s);
        let loaded = snapshot::load(fx.dir.path())
            .map_err(|e| TestCaseError::fail(format!("{e}: {:#?}", e.issues())))?;
        let mut expected_manifest = s.manifest.clone();
        expected_manifest.files = loaded.manifest.files.clone();
        prop_assert_eq!(&loaded.manifest, &expected_manifest);
        prop_assert_eq!(&loaded.posts, &s.posts);
        prop_assert_eq!(&loaded.users, &s.users);
        prop_assert_eq!(&loaded.hashtags, &s.hashtags);
        for (given, got) in [
            (&s.post_vectors, &loaded.post_vectors),
            (&s.user_vectors, &loaded.user_vectors),
            (&s.hashtag_vectors, &loaded.hashtag_vectors),
        ] {
            prop_assert_eq!(given.dim(), got.dim());
            let want = if s.manifest.metric == Metric::Cosine { normalised(given) } else { given.clone() };
            for (a, b) in want.iter().zip(got.iter()) {
                prop_assert!((a - b).abs() <= 1e-6, "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn hashtag_normalisation_is_idempotent(s in "\\PC{0,12}") {
        let once = normalise_hashtag(&s);
        prop_assert_eq!(normalise_hashtag(&once), once.clone());
        if !once.is_empty() && once.len() <= MAX_TAG_BYTES
            && !once.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            prop_assert!(is_normalised_hashtag(&once), "{:?}", once);
        }
    }
}
