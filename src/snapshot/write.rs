//! Writing a snapshot directory, as an ML engineer's export script would.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use ndarray::Array2;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Snapshot, files, npy};

impl Snapshot {
    /// Writes this snapshot into `dir` (created if missing): the data files, then a manifest
    /// whose `files` lists the sha256 of each. `users.*` and `hashtags.*` are written only when
    /// non-empty. The manifest is written last, so a crash leaves no loadable half-snapshot.
    pub fn write_to(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let mut manifest = self.manifest.clone();
        manifest.files.clear();
        let mut put = |name: &str, bytes: Vec<u8>| -> io::Result<()> {
            manifest.files.insert(name.to_string(), sha256_hex(&bytes));
            fs::write(dir.join(name), bytes)
        };
        put(files::POSTS_NPY, npy_bytes(&self.post_vectors)?)?;
        put(files::POSTS_JSONL, jsonl_bytes(&self.posts)?)?;
        if !self.users.is_empty() {
            put(files::USERS_NPY, npy_bytes(&self.user_vectors)?)?;
            put(files::USERS_JSONL, jsonl_bytes(&self.users)?)?;
        }
        if !self.hashtags.is_empty() {
            put(files::HASHTAGS_NPY, npy_bytes(&self.hashtag_vectors)?)?;
            put(files::HASHTAGS_JSONL, jsonl_bytes(&self.hashtags)?)?;
        }
        let mut json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        json.push(b'\n');
        fs::write(dir.join(files::MANIFEST), json)
    }
}

/// Lower-case hex sha256, the form `manifest.json` uses.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

fn npy_bytes(matrix: &Array2<f32>) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128 + matrix.len() * 4);
    npy::write_f32_matrix(&mut out, matrix)?;
    Ok(out)
}

fn jsonl_bytes<T: Serialize>(records: &[T]) -> io::Result<Vec<u8>> {
    let mut out = BufWriter::new(Vec::new());
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())
}
