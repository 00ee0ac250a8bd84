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
