//! Measuring the engine offline: recall and per-query latency of each search engine against a
//! ground truth computed elsewhere (`feedrank bench ann`, and `scripts/bench_peers.py`, which
//! runs the same vectors through other libraries), and the hashtag recommender against held-out
//! real data (`feedrank eval hashtags`).

pub mod ann;
pub mod hashtags;

use std::path::Path;

/// Errors of the evaluation layer: inputs that cannot be read or do not fit together, and
/// parameters out of range. Each names the file or parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{name}: {message}")]
    Parameter { name: &'static str, message: String },
}

impl EvalError {
    pub(crate) fn input(file: &Path, message: impl Into<String>) -> EvalError {
        EvalError::Input {
            file: file.display().to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn parameter(name: &'static str, message: impl Into<String>) -> EvalError {
        EvalError::Parameter {
            name,
            message: message.into(),
        }
    }
}
