//! Service settings. Precedence, lowest first: built-in defaults, the config file
//! (`--config FILE` or `FEEDRANK_CONFIG`), environment variables, command-line flags.
//!
//! ```toml
//! addr = "127.0.0.1:8080"
//! snapshot = "models/demo"
//! request_timeout_ms = 1000
//! log_format = "text"        # or "json"
//! max_profiles = 1000000     # onboarded users held (PUT /v1/users/{id})
//! data_dir = "data"          # write-ahead log of live events
//!
//! [feed]
//! index = "hnsw"             # or "hnsw_rs" (reference graph builder), "exact"
//! hnsw_max_connections = 16
//! hnsw_ef_construction = 200
//! hnsw_ef_search = 64
//! candidates = 200
//! hashtag_candidates = 60    # from the hashtags the user follows
//! trending_candidates = 40   # best value per view in the trending window
//! fresh_candidates = 20      # recent posts with few views (exploration)
//! trending_window_hours = 72
//! fresh_window_hours = 24
//! fresh_max_views = 200
//! max_depth = 500
//!
//! [feed.hashtags]            # hashtag recommendations (see `hashtags::HashtagOptions`)
//! velocity_window_hours = 72
//! velocity_share = 0.7
//! trending_weight = 0.45
//! value_weight = 0.25
//! bridge_weight = 0.3
//! affinity_weight = 1.0
//! neighbour_weight = 0.5     # what a newcomer's nearest users follow ([feed.users])
//! diversity_weight = 0.3
//! near_duplicate = 0.9
//! bridge_slots = 2           # places of a page kept for tags shared across languages
//! min_bridge = 0.5
//! min_posts = 3
//! max_paid_share = 0.5
//! max_reported_share = 0.2
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::feed::FeedOptions;
use crate::live::LiveOptions;

/// The snapshot served when none is configured: the demo world bundled in the repository.
pub const DEFAULT_SNAPSHOT: &str = "models/demo";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Snapshot directory; `None` serves the bundled demo world.
    pub snapshot: Option<PathBuf>,
    /// Requests running longer than this answer 503 `timeout`.
    pub request_timeout_ms: u64,
    pub log_format: LogFormat,
    /// Most onboarded users' profiles held; past it, new users' `PUT`s are refused.
    pub max_profiles: usize,
    /// Where the write-ahead log of live events lives.
    pub data_dir: PathBuf,
    /// Snapshots the admin routes may load (reload, rollback); `None`: the served snapshot's
    /// parent directory.
    pub models_dir: Option<PathBuf>,
    /// Bearer token of the admin routes; `None` or empty disables them. Prefer the
    /// FEEDRANK_ADMIN_TOKEN environment variable to a file.
    pub admin_token: Option<String>,
    pub feed: FeedOptions,
    pub live: LiveOptions,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            snapshot: None,
            request_timeout_ms: 1000,
            log_format: LogFormat::Text,
            max_profiles: 1_000_000,
            data_dir: PathBuf::from("data"),
            models_dir: None,
            admin_token: None,
            feed: FeedOptions::default(),
            live: LiveOptions::default(),
        }
    }
}

impl ServeConfig {
    /// Reads a TOML config file; unknown keys are errors (a typo must not pass silently).
    pub fn from_file(path: &Path) -> Result<ServeConfig, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let config: ServeConfig = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms", "must be at least 1");
        }
        if self.max_profiles == 0 {
            return invalid("max_profiles", "must be at least 1");
        }
        if let Err((field, message)) = self.live.validate() {
            return invalid(field, &message);
        }
        let f = &self.feed;
        if f.candidates == 0 || f.candidates > 10_000 {
            return invalid("feed.candidates", "must be from 1 to 10000");
        }
        for (field, value) in [
            ("feed.hashtag_candidates", f.hashtag_candidates),
            ("feed.trending_candidates", f.trending_candidates),
            ("feed.fresh_candidates", f.fresh_candidates),
        ] {
            if value > 10_000 {
                return invalid(field, "must be from 0 to 10000");
            }
        }
        if f.trending_window_hours == 0 || f.fresh_window_hours == 0 {
            return invalid(
                "feed.trending_window_hours / fresh_window_hours",
                "must be at least 1",
            );
        }
        if f.max_depth == 0 || f.max_depth > 100_000 {
            return invalid("feed.max_depth", "must be from 1 to 100000");
        }
        if !(2..=255).contains(&f.hnsw_max_connections) {
            return invalid("feed.hnsw_max_connections", "must be from 2 to 255");
        }
        if f.hnsw_ef_construction == 0 || f.hnsw_ef_search == 0 {
            return invalid(
                "feed.hnsw_ef_construction / hnsw_ef_search",
                "must be at least 1",
            );
        }
        f.hashtags
            .validate()
            .map_err(|message| ConfigError::Invalid {
                field: "feed",
                message,
            })?;
        Ok(())
    }

    /// The snapshot directory to serve: the configured one, else the bundled demo world
    /// (looked up in the working directory, then next to the crate's sources).
    pub fn snapshot_dir(&self) -> PathBuf {
        if let Some(dir) = &self.snapshot {
            return dir.clone();
        }
        let local = PathBuf::from(DEFAULT_SNAPSHOT);
        if local.exists() {
            return local;
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_SNAPSHOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedrank.toml");
        std::fs::write(&path, "addr = \"0.0.0.0:9000\"\n[feed]\ncandidates = 300\n").unwrap();
        let c = ServeConfig::from_file(&path).unwrap();
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.feed.candidates, 300);
        assert_eq!(c.feed.max_depth, FeedOptions::default().max_depth);

        std::fs::write(&path, "adr = \"0.0.0.0:9000\"\n").unwrap();
        let err = ServeConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("adr"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let mut c = ServeConfig::default();
        c.feed.candidates = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("feed.candidates"), "{err}");
    }
}
