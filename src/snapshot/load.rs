//! Loading and validating a snapshot directory.

use std::path::Path;

use super::{Snapshot, SnapshotError};

/// Loads and validates the snapshot in `dir`. Under `Metric::Cosine` vectors are normalised.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let _ = dir;
    todo!()
}
