//! feedrank: a feed-ranking engine that blends embedding similarity (HNSW retrieval)
//! with value-first, low-ad scoring.
//!
//! Modules follow the data, and each depends only on those before it:
//! `snapshot` → `index` → `candidates` → `scoring` → `hashtags` → `policy` → `feed` → `live`
//! → `api`, with `profiles` (onboarding input) beside them, between `snapshot` and `feed`, and
//! `wal` (a write-ahead log of opaque records, depending on nothing) under `live`.
//! `demo` writes snapshots; `eval` measures `index` and the feed's recommendations; `metrics`
//! (counters and histograms, plain data, depending on nothing) is recorded by `feed` and
//! `api`; `config` and `cli` sit on top. See `ARCHITECTURE.md`.

pub mod api;
pub mod candidates;
pub mod cli;
pub mod config;
pub mod demo;
pub mod eval;
pub mod feed;
pub mod hashtags;
pub mod index;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod profiles;
pub mod scoring;
pub mod snapshot;
pub mod wal;
