//! Errors of the snapshot layer.

use std::fmt;

/// One defect found in a snapshot, located as precisely as the contract asks:
/// the file, the 1-based line for JSONL files (or row for `.npy`), and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot breaks the contract; every defect found is listed (up to a cap).
    #[error("invalid snapshot ({} problem(s)); first: {}", .0.len(), .0.first().map(|i| i.to_string()).unwrap_or_default())]
    Invalid(Vec<Issue>),
}

impl SnapshotError {
    pub fn issues(&self) -> &[Issue] {
        match self {
            SnapshotError::Invalid(issues) => issues,
        }
    }
}
