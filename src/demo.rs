//! Placeholder until the demo generator lands.
use crate::snapshot::Snapshot;

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub posts: usize,
    pub users: usize,
    pub seed: u64,
    pub dim: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { posts: 50_000, users: 5_000, seed: 42, dim: 64 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("demo")]
pub struct DemoError;

pub fn generate(config: &DemoConfig) -> Result<Snapshot, DemoError> {
    let _ = config;
    todo!()
}
