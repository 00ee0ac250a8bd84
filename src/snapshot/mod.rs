//! Model snapshots: the hand-over format between ML engineers and feedrank.
//!
//! A snapshot is a directory of `.npy` matrices and JSON/JSONL metadata that plain Python can
//! write (see `docs/SNAPSHOT_FORMAT.md`). [`load`] validates everything the contract demands and
//! reports every defect with the file, line and field; [`Snapshot::write_to`] writes one (the
//! demo world and tests use it).

mod error;
mod load;
pub mod npy;
mod publish;
mod records;
mod summary;
mod write;

use std::collections::BTreeMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

pub use error::{Issue, MAX_ISSUES, SnapshotError};
pub use load::load;
pub use publish::{EMBEDDING_FIELD, FieldProblem, NewPost, parse_new_post};
pub use records::{
    MAX_ID_BYTES, MAX_LANG_BYTES, MAX_TAG_BYTES, MAX_UNIX_SECONDS, MIXED_LANG,
    is_normalised_hashtag, is_reader_lang, is_valid_lang, normalise_hashtag,
};
pub(crate) use summary::thousands;
pub use summary::{Summary, TOP_HASHTAGS};
pub use write::sha256_hex;

/// The only `format_version` this build understands.
pub const FORMAT_VERSION: u32 = 1;

/// File names inside a snapshot directory.
pub mod files {
    pub const MANIFEST: &str = "manifest.json";
    pub const POSTS_NPY: &str = "posts.npy";
    pub const POSTS_JSONL: &str = "posts.jsonl";
    pub const USERS_NPY: &str = "users.npy";
    pub const USERS_JSONL: &str = "users.jsonl";
    pub const HASHTAGS_NPY: &str = "hashtags.npy";
    pub const HASHTAGS_JSONL: &str = "hashtags.jsonl";
    /// Optional: a prebuilt HNSW index of the posts (`index::store`). Not a data file: it is
    /// not listed in `files`, and it binds itself to `posts.npy` by that file's sha256.
    pub const POSTS_INDEX: &str = "posts.index";
    /// Optional: a prebuilt HNSW index of the users, bound to `users.npy` the same way.
    pub const USERS_INDEX: &str = "users.index";
    /// Every data file the contract knows, in the order they are checked.
    pub const DATA_FILES: [&str; 6] = [
        POSTS_NPY,
        POSTS_JSONL,
        USERS_NPY,
        USERS_JSONL,
        HASHTAGS_NPY,
        HASHTAGS_JSONL,
    ];
}

/// How similarity between two embeddings is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Vectors are normalised on load; similarity is their dot product, in [-1, 1].
    Cosine,
    /// Raw inner product; vectors are used as given.
    Dot,
}

/// What a post is, commercially.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostKind {
    Organic,
    /// A paid placement: served only in ad slots, never by organic retrieval.
    Ad,
    /// A creator's brand endorsement: organic, but labelled and capped.
    Sponsored,
}

impl PostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PostKind::Organic => "organic",
            PostKind::Ad => "ad",
            PostKind::Sponsored => "sponsored",
        }
    }
}

/// Engagement counters of a post. Missing counters are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub views: u64,
    pub likes: u64,
    pub saves: u64,
    pub comments: u64,
    pub shares: u64,
    pub hides: u64,
    pub reports: u64,
}

/// One line of `posts.jsonl`; row `i` of `posts.npy` is its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: String,
    pub author: String,
    /// A language code (`en`, `zh`, ...) or `mixed`; [`load`] stores it in lower case.
    pub lang: String,
    pub hashtags: Vec<String>,
    pub kind: PostKind,
    /// Unix seconds.
    pub created_at: i64,
    pub stats: Stats,
}

/// One line of `users.jsonl`; row `i` of `users.npy` is its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// Language codes, in lower case once loaded.
    pub langs: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Hashtags the user picked or follows.
    pub follows: Vec<String>,
}

/// One line of `hashtags.jsonl`; row `i` of `hashtags.npy` is its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hashtag {
    pub tag: String,
    /// Display form per language code, e.g. `{"en": "#cats", "zh": "#猫"}` (codes in lower
    /// case once loaded; display forms kept as written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display: BTreeMap<String, String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub model_version: String,
    /// RFC 3339 timestamp, kept as written.
    pub created_at: String,
    pub dim: usize,
    pub metric: Metric,
    /// sha256 (lower-case hex) of every data file present.
    pub files: BTreeMap<String, String>,
    /// Overrides of scoring weights and policy knobs. Validated by the scoring layer, which
    /// owns the vocabulary (see `scoring::ScoringConfig::with_overrides`).
    #[serde(default)]
    pub scoring: serde_json::Map<String, serde_json::Value>,
}

/// A validated snapshot in memory. Under `Metric::Cosine` every matrix row has unit norm.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub manifest: Manifest,
    pub posts: Vec<Post>,
    /// `[posts.len(), dim]`
    pub post_vectors: Array2<f32>,
    pub users: Vec<User>,
    /// `[users.len(), dim]` (zero rows when the snapshot has no users)
    pub user_vectors: Array2<f32>,
    pub hashtags: Vec<Hashtag>,
    /// `[hashtags.len(), dim]` (zero rows when the snapshot has no hashtags)
    pub hashtag_vectors: Array2<f32>,
}

impl Snapshot {
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    pub fn metric(&self) -> Metric {
        self.manifest.metric
    }

    pub fn model_version(&self) -> &str {
        &self.manifest.model_version
    }

    /// sha256 of `posts.npy` as the manifest lists it (always listed in a loaded snapshot).
    pub fn posts_sha256(&self) -> Option<&str> {
        self.manifest
            .files
            .get(files::POSTS_NPY)
            .map(String::as_str)
    }

    /// sha256 of `users.npy` as the manifest lists it.
    pub fn users_sha256(&self) -> Option<&str> {
        self.manifest
            .files
            .get(files::USERS_NPY)
            .map(String::as_str)
    }

    /// The language codes of posts and users but [`MIXED_LANG`], each once, in order of
    /// first appearance (posts first): the language communities.
    pub fn languages(&self) -> Vec<&str> {
        let codes = self.posts.iter().map(|p| p.lang.as_str()).chain(
            self.users
                .iter()
                .flat_map(|u| u.langs.iter().map(String::as_str)),
        );
        let mut seen = std::collections::HashSet::new();
        codes
            .filter(|&code| code != MIXED_LANG && seen.insert(code))
            .collect()
    }

    /// The newest `created_at` among posts: the snapshot's "now" for freshness.
    pub fn newest_post_time(&self) -> Option<i64> {
        self.posts.iter().map(|p| p.created_at).max()
    }
}
