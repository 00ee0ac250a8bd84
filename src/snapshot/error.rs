//! Errors of the snapshot layer.

use std::fmt;

/// Most issues [`SnapshotError::Invalid`] lists. When a snapshot has more defects, the last
/// entry says that the list was cut short (and the remaining lines of the file being checked
/// are only counted, to save time).
pub const MAX_ISSUES: usize = 100;

/// One defect found in a snapshot, located as precisely as the contract asks:
/// the file, the 1-based line for JSONL files (or row for `.npy`), and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl Issue {
    pub fn new(
        file: impl Into<String>,
        line: Option<usize>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Issue {
        Issue {
            file: file.into(),
            line,
            field,
            message: message.into(),
        }
    }
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
    /// The snapshot breaks the contract; every defect found is listed (up to [`MAX_ISSUES`]).
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

/// Collects issues up to [`MAX_ISSUES`]; once full, further issues are dropped and a final
/// entry says so. Validation loops check [`Issues::is_full`] to stop early.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    list: Vec<Issue>,
    full: bool,
}

impl Issues {
    pub(crate) fn push(&mut self, issue: Issue) {
        if self.full {
            return;
        }
        if self.list.len() + 1 < MAX_ISSUES {
            self.list.push(issue);
        } else {
            self.full = true;
            self.list.push(Issue::new(
                issue.file,
                None,
                None,
                format!(
                    "too many problems: only the first {} are listed",
                    MAX_ISSUES - 1
                ),
            ));
        }
    }

    /// Shorthand for an issue in `file`.
    pub(crate) fn add(
        &mut self,
        file: &str,
        line: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.push(Issue::new(file, line, field.map(str::to_string), message));
    }

    /// Appends the issues of `other` (a list gathered on another thread), keeping the cap.
    pub(crate) fn extend(&mut self, other: Issues) {
        for issue in other.list {
            self.push(issue);
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.full
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_error(self) -> SnapshotError {
        SnapshotError::Invalid(self.list)
    }
}
