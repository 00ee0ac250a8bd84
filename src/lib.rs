//! feedrank: a feed-ranking engine that blends embedding similarity (HNSW retrieval)
//! with value-first, low-ad scoring.
//!
//! Modules follow the data, and each depends only on those before it:
//! `snapshot` → `index` → `candidates` → `scoring` → `policy` → `feed` → `api`.
//! `demo` writes snapshots; `eval` measures `index`; `config` and `cli` sit on top. See `ARCHITECTURE.md`.

pub mod api;
pub mod candidates;
pub mod cli;
pub mod config;
pub mod demo;
pub mod eval;
pub mod feed;
pub mod index;
pub mod policy;
pub mod scoring;
pub mod snapshot;
