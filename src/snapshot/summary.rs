//! The human summary printed by `feedrank snapshot check`.

use super::Snapshot;

#[derive(Debug, Clone)]
pub struct Summary {}

impl Summary {
    pub fn of(snapshot: &Snapshot) -> Summary {
        let _ = snapshot;
        todo!()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "summary")
    }
}
