//! Which snapshot serves, and replacing it while the service runs: reload and rollback.
//!
//! A reload loads, validates and indexes the new snapshot on the caller's (blocking) thread
//! while the old model serves; only then is the old model's live state handed over
//! (`Live::successor`: its writes wait for a moment, the log is replayed onto the new model,
//! compacted first for a new version) and the new model installed, in one step. A load that
//! fails changes nothing. Requests already running finish on the model they started with.
//!
//! Paths are confined to the models directory: a path is resolved against it, canonicalised
//! (so `..` and symlinks are followed to where they really lead), and refused unless it is
//! inside. One reload runs at a time; a second one is refused rather than queued.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::feed::{FeedError, FeedOptions, Model};
use crate::live::{Live, LiveError};

/// What a load produced and when: `GET /admin/snapshots` lists the serving one and the one
/// before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadInfo {
    pub model_version: String,
    /// The snapshot directory, relative to the models directory.
    pub path: String,
    /// Unix seconds when it started serving.
    pub loaded_at: u64,
    /// Loading, validating and indexing, and the hand-over of live state, in milliseconds.
    pub load_ms: u64,
    /// Whether the organic index was read from `posts.index` or built.
    pub index: &'static str,
    pub posts: usize,
    pub users: usize,
    pub hashtags: usize,
    pub dim: usize,
}

/// Why a reload or rollback did not happen. The serving model is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("path: {0}")]
    Path(String),
    #[error("snapshot {path}: {error}")]
    Load { path: String, error: FeedError },
    #[error("handing live state over: {0}")]
    Live(#[from] LiveError),
    #[error("no previous snapshot to roll back to")]
    NoPrevious,
    #[error("a reload is already running")]
    Busy,
}

/// A model ready to serve, with its live state when the service keeps one.
pub enum Served {
    Live(Arc<Live>),
    Model(Arc<Model>),
}

#[derive(Default)]
struct History {
    current: Option<LoadInfo>,
    previous: Option<LoadInfo>,
}

/// The models directory, the options every load uses, and what was loaded.
pub struct Lifecycle {
    models_dir: PathBuf,
    options: FeedOptions,
    history: Mutex<History>,
    busy: Mutex<()>,
}

impl Lifecycle {
    /// Reloads will be confined to `models_dir` (which must exist).
    pub fn new(models_dir: &Path, options: FeedOptions) -> Result<Lifecycle, ReloadError> {
        let models_dir = models_dir.canonicalize().map_err(|e| {
            ReloadError::Path(format!("models directory {}: {e}", models_dir.display()))
        })?;
        Ok(Lifecycle {
            models_dir,
            options,
            history: Mutex::new(History::default()),
            busy: Mutex::new(()),
        })
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// `path` (relative to the models directory, or absolute) as a snapshot directory inside
    /// the models directory.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ReloadError> {
        if path.is_empty() {
            return Err(ReloadError::Path("must name a snapshot directory".into()));
        }
        let joined = self.models_dir.join(path);
        let real = joined
            .canonicalize()
            .map_err(|e| ReloadError::Path(format!("{path:?}: {e}")))?;
        if !real.starts_with(&self.models_dir) || real == self.models_dir {
            return Err(ReloadError::Path(format!(
                "{path:?} is not a directory inside the models directory {}",
                self.models_dir.display()
            )));
        }
        if !real.is_dir() {
            return Err(ReloadError::Path(format!("{path:?} is not a directory")));
        }
        Ok(real)
    }

    /// Records a model loaded at start-up (or by anyone else) as the serving one.
    pub fn record(&self, dir: &Path, model: &Model, elapsed: std::time::Duration) -> LoadInfo {
        let info = self.info(dir, model, elapsed);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.previous = history.current.replace(info.clone());
        info
    }

    /// The serving load and the one before it.
    pub fn status(&self) -> (Option<LoadInfo>, Option<LoadInfo>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.current.clone(), history.previous.clone())
    }

    /// Loads the snapshot at `path` and, if it loads, hands `current`'s live state over to it
    /// and installs it with `install`. Blocking: call it off the async runtime.
    pub fn reload(
        &self,
        path: &str,
        current: Option<Arc<Live>>,
        install: impl Fn(Served),
    ) -> Result<LoadInfo, ReloadError> {
        let dir = self.resolve(path)?;
        let _busy = self.busy.try_lock().map_err(|_| ReloadError::Busy)?;
        self.load(&dir, current, install)
    }

    /// Reloads the snapshot that served before the current one.
    pub fn rollback(
        &self,
        current: Option<Arc<Live>>,
        install: impl Fn(Served),
    ) -> Result<LoadInfo, ReloadError> {
        let _busy = self.busy.try_lock().map_err(|_| ReloadError::Busy)?;
        let previous = self.status().1.ok_or(ReloadError::NoPrevious)?;
        let dir = self.resolve(&previous.path)?;
        self.load(&dir, current, install)
    }

    /// Loads the snapshot at `path` as a candidate arm: validated and indexed like a reload,
    /// but served to nobody yet and without live state of its own.
    pub fn load_candidate(&self, path: &str) -> Result<(Arc<Model>, LoadInfo), ReloadError> {
        let dir = self.resolve(path)?;
        let _busy = self.busy.try_lock().map_err(|_| ReloadError::Busy)?;
        let started = Instant::now();
        let model = Model::load(&dir, self.options).map_err(|error| ReloadError::Load {
            path: self.relative(&dir),
            error,
        })?;
        let info = self.info(&dir, &model, started.elapsed());
        tracing::info!(
            snapshot = info.path,
            model_version = info.model_version,
            load_ms = info.load_ms,
            "candidate arm loaded"
        );
        Ok((Arc::new(model), info))
    }

    /// Makes the candidate arm's model the main one: the live state is handed over to it as
    /// in a reload (the log replayed onto it), without loading it again.
    pub fn promote(
        &self,
        model: Arc<Model>,
        info: LoadInfo,
        current: Option<Arc<Live>>,
        install: impl Fn(Served),
    ) -> Result<LoadInfo, ReloadError> {
        let _busy = self.busy.try_lock().map_err(|_| ReloadError::Busy)?;
        let started = Instant::now();
        match current {
            Some(live) => {
                live.successor(Arc::clone(&model), |next| install(Served::Live(next)))?;
            }
            None => install(Served::Model(model)),
        }
        let info = LoadInfo {
            load_ms: info.load_ms + started.elapsed().as_millis() as u64,
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ..info
        };
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.previous = history.current.replace(info.clone());
        tracing::info!(model_version = info.model_version, "candidate arm promoted");
        Ok(info)
    }

    fn load(
        &self,
        dir: &Path,
        current: Option<Arc<Live>>,
        install: impl Fn(Served),
    ) -> Result<LoadInfo, ReloadError> {
        let started = Instant::now();
        let relative = self.relative(dir);
        tracing::info!(snapshot = relative, "reload: loading");
        let model = Model::load(dir, self.options).map_err(|error| {
            tracing::warn!(snapshot = relative, %error, "reload failed; the serving model stays");
            ReloadError::Load {
                path: relative.clone(),
                error,
            }
        })?;
        let model = Arc::new(model);
        match current {
            Some(live) => {
                live.successor(Arc::clone(&model), |next| install(Served::Live(next)))?;
            }
            None => install(Served::Model(Arc::clone(&model))),
        }
        let info = self.record(dir, &model, started.elapsed());
        tracing::info!(
            snapshot = relative,
            model_version = info.model_version,
            load_ms = info.load_ms,
            "reload: serving"
        );
        Ok(info)
    }

    fn relative(&self, dir: &Path) -> String {
        dir.strip_prefix(&self.models_dir)
            .unwrap_or(dir)
            .display()
            .to_string()
    }

    fn info(&self, dir: &Path, model: &Model, elapsed: std::time::Duration) -> LoadInfo {
        let snapshot = model.snapshot();
        LoadInfo {
            model_version: model.model_version().to_string(),
            path: self.relative(&dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())),
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            load_ms: elapsed.as_millis() as u64,
            index: model.index_origin().name(),
            posts: snapshot.posts.len(),
            users: snapshot.users.len(),
            hashtags: model.hashtags().len(),
            dim: snapshot.dim(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_models_directory() {
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        std::fs::create_dir_all(models.join("a")).unwrap();
        std::fs::create_dir_all(root.path().join("outside")).unwrap();
        std::fs::write(models.join("file"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.path().join("outside"), models.join("escape")).unwrap();
        let lifecycle = Lifecycle::new(&models, FeedOptions::default()).unwrap();
        assert!(lifecycle.resolve("a").unwrap().ends_with("models/a"));
        let inside = models.join("a").display().to_string();
        assert!(lifecycle.resolve(&inside).is_ok(), "absolute inside");
        for bad in [
            "",
            "../outside",
            "a/../../outside",
            "/tmp",
            ".",
            "file",
            "missing",
        ] {
            assert!(
                matches!(lifecycle.resolve(bad), Err(ReloadError::Path(_))),
                "{bad:?} accepted"
            );
        }
        #[cfg(unix)]
        assert!(matches!(
            lifecycle.resolve("escape"),
            Err(ReloadError::Path(_))
        ));
    }
}
