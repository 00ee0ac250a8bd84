//! A [`FlatHnswIndex`] stored in a file (`posts.index` next to a snapshot), so that a service
//! loads the graph in seconds instead of building it for minutes.
//!
//! # Layout
//!
//! All integers and floats are little endian.
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic, [`MAGIC`] |
//! | 4 | format version, [`FORMAT_VERSION`] |
//! | 4 | header length `h` |
//! | `h` | header: [`Header`] serialised with postcard |
//! | 32 | sha256 of everything above (the header is checked before it is trusted) |
//! | … | sections, each starting at a multiple of 64 bytes (zero padding before it) |
//! | 32 | sha256 of everything above |
//!
//! The magic, version, header length and header checksum keep their places in every format
//! version; the version governs the header's fields and the rest.
//! Sections, in order: the row list (`u32` per position), the vectors (`stride` `f32` per
//! position, zero-padded), layer 0's offsets and links (`u32`), then for each upper layer its
//! members, offsets and links (`u32`). They are read with `read_exact` straight into the
//! index's own vectors, and hashed chunk by chunk while still in cache.
//!
//! # What is checked on load
//!
//! A stored index is used only if it is intact (magic, version, both checksums, lengths) and
//! built from this snapshot with these options: the sha256 of `posts.npy` (or `users.npy` for
//! a user index), the row list, metric
//! and dimension, `max_connections` and `ef_construction` (`ef_search` is a search-time option,
//! taken from the caller). Its vectors must equal the snapshot's rows bit for bit. Even a file
//! whose checksums hold is validated structurally (offsets, links, layer members, entry point),
//! so no file can make a search panic or read out of bounds.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::flat::{Adjacency, FlatHnswIndex, LANES, Line, UpperLayer};
use super::{GraphBuilder, HnswParams};
use crate::snapshot::Metric;

/// First bytes of every stored index. The non-ASCII first byte and the `\r\n` expose a file
/// that went through a text-mode transfer.
pub const MAGIC: [u8; 8] = *b"\x89FRIX\r\n\x1a";

/// The only stored-index format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Magic, version and header length.
const PREFIX_LEN: usize = 16;
const DIGEST_LEN: usize = 32;
/// Sections start on cache lines, so the vectors can be read straight into 64-byte rows.
const ALIGN: u64 = 64;
/// A header describes a handful of layers in a few hundred bytes; anything near this is not
/// a header.
const MAX_HEADER_LEN: u32 = 1 << 20;
/// Bytes read (and hashed) at a time: small enough to hash while in cache.
const CHUNK: usize = 1 << 20;

/// Why a stored index cannot be used. Messages start with the file name.
#[derive(Debug, thiserror::Error)]
pub enum StoredIndexError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: io::Error },
    #[error("{file}: cannot write: {source}")]
    Write { file: String, source: io::Error },
    #[error("{file}: not a stored index (bad magic bytes)")]
    BadMagic { file: String },
    #[error("{file}: truncated: {detail}")]
    Truncated { file: String, detail: String },
    #[error("{file}: checksum mismatch in the {part}: the file is corrupt")]
    ChecksumMismatch { file: String, part: &'static str },
    #[error("{file}: format version {found}, this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { file: String, found: u32 },
    #[error("{file}: malformed: {detail}")]
    Malformed { file: String, detail: String },
    /// Intact, but built from another snapshot or with other options.
    #[error("{file}: {detail}")]
    Mismatch { file: String, detail: String },
    #[error("{file}: invalid structure: {detail}")]
    InvalidStructure { file: String, detail: String },
}

impl StoredIndexError {
    /// `true` when the file does not exist (nothing was stored, rather than something wrong).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoredIndexError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a stored index must have been built from, and with, to be used.
#[derive(Debug, Clone, Copy)]
pub struct IndexBinding<'a> {
    /// The matrix file the rows come from (`posts.npy`, `users.npy`), for messages.
    pub source: &'a str,
    /// Its sha256 as the manifest lists it (hex).
    pub source_sha256: &'a str,
    /// The matrix the index is over, as loaded (normalised under cosine).
    pub vectors: &'a Array2<f32>,
    /// The rows of `vectors` indexed, in the order the graph was built over them.
    pub rows: &'a [u32],
    pub metric: Metric,
    /// `max_connections` and `ef_construction` must be those the graph was built with;
    /// `ef_search` becomes the loaded index's.
    pub params: HnswParams,
}

/// The postcard-encoded header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    format_version: u32,
    /// `cosine` or `dot`, as in the manifest.
    metric: String,
    dim: u32,
    /// Indexed rows (graph positions).
    rows: u64,
    max_connections: u32,
    ef_construction: u32,
    builder: String,
    /// sha256 of the matrix file (`posts.npy`, `users.npy`) the graph was built from, as its
    /// manifest listed it.
    posts_sha256: String,
    /// sha256 of the row list as little-endian `u32`s.
    rows_sha256: [u8; DIGEST_LEN],
    /// The search's entry point: a position on the top layer.
    entry: u32,
    /// Byte lengths of the sections.
    lengths: Lengths,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lengths {
    rows: u64,
    vectors: u64,
    base: AdjacencyLengths,
    upper: Vec<UpperLengths>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct AdjacencyLengths {
    offsets: u64,
    links: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct UpperLengths {
    members: u64,
    adjacency: AdjacencyLengths,
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
    }
}

fn byte_len<T>(items: &[T]) -> u64 {
    std::mem::size_of_val(items) as u64
}

/// sha256 of `rows` as little-endian `u32`s.
fn rows_digest(rows: &[u32]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    if cfg!(target_endian = "little") {
        hasher.update(bytemuck::cast_slice::<u32, u8>(rows));
    } else {
        for r in rows {
            hasher.update(r.to_le_bytes());
        }
    }
    hasher.finalize().into()
}

fn align_up(n: u64) -> Option<u64> {
    n.checked_next_multiple_of(ALIGN)
}

const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];

/// Counts and hashes what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let to = align_up(self.written).expect("file sizes fit in u64");
        self.put(&ZEROS[..(to - self.written) as usize])
    }

    /// 4-byte words (`u32`, or `f32` rows seen as words), little endian.
    fn words<T: bytemuck::Pod>(&mut self, items: &[T]) -> io::Result<()> {
        self.pad()?;
        let words: &[u32] = bytemuck::cast_slice(items);
        if cfg!(target_endian = "little") {
            return self.put(bytemuck::cast_slice(words));
        }
        for chunk in words.chunks(CHUNK / 4) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.put(&bytes)?;
        }
        Ok(())
    }
}

/// A unique name in `dir` for a file being written, so that concurrent writers never share one.
fn temp_name(file: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{file}.tmp-{}-{n}", std::process::id())
}

fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl FlatHnswIndex {
    /// Stores this index at `path`, bound to the `posts.npy` whose sha256 (hex, as the manifest
    /// lists it) is `posts_sha256`, and returns the file's size in bytes.
    ///
    /// The write is atomic: the file is written under a temporary name in the same directory,
    /// flushed to disk, then renamed over `path`, so readers see the old file or the whole new
    /// one, never a part.
    pub fn write_to(&self, path: &Path, posts_sha256: &str) -> Result<u64, StoredIndexError> {
        let file = file_label(path);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let temp = dir.join(temp_name(&file));
        let write = || -> io::Result<u64> {
            let mut out = BufWriter::with_capacity(CHUNK, File::create_new(&temp)?);
            let size = self.encode(&mut out, posts_sha256, FORMAT_VERSION)?;
            let out = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            out.sync_all()?;
            fs::rename(&temp, path)?;
            // The rename is durable once the directory is.
            #[cfg(unix)]
            File::open(dir)?.sync_all()?;
            Ok(size)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp);
            StoredIndexError::Write { file, source }
        })
    }

    /// Writes the stored form of this index to `out` with the given format version (tests
    /// write other versions); returns the bytes written.
    fn encode(&self, out: impl Write, posts_sha256: &str, version: u32) -> io::Result<u64> {
        let n = self.rows.len();
        let adjacency_lengths = |a: &Adjacency| AdjacencyLengths {
            offsets: byte_len(&a.offsets),
            links: byte_len(&a.links),
        };
        let header = Header {
            format_version: version,
            metric: metric_name(self.metric).to_string(),
            dim: u32::try_from(self.dim).map_err(io::Error::other)?,
            rows: n as u64,
            max_connections: u32::try_from(self.params.max_connections)
                .map_err(io::Error::other)?,
            ef_construction: u32::try_from(self.params.ef_construction)
                .map_err(io::Error::other)?,
            builder: self.builder.name().to_string(),
            posts_sha256: posts_sha256.to_ascii_lowercase(),
            rows_sha256: rows_digest(&self.rows),
            entry: self.entry,
            lengths: Lengths {
                rows: byte_len(&self.rows),
                vectors: byte_len(&self.vectors),
                base: adjacency_lengths(&self.base),
                upper: self
                    .upper
                    .iter()
                    .map(|l| UpperLengths {
                        members: byte_len(&l.members),
                        adjacency: adjacency_lengths(&l.adjacency),
                    })
                    .collect(),
            },
        };
        let header = postcard::to_allocvec(&header).map_err(io::Error::other)?;
        let header_len = u32::try_from(header.len())
            .ok()
            .filter(|&l| l <= MAX_HEADER_LEN)
            .ok_or_else(|| io::Error::other("header too large"))?;

        let mut w = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            written: 0,
        };
        w.put(&MAGIC)?;
        w.put(&version.to_le_bytes())?;
        w.put(&header_len.to_le_bytes())?;
        w.put(&header)?;
        let header_digest = w.hasher.clone().finalize();
        w.put(&header_digest)?;
        w.words(&self.rows)?;
        w.words(&self.vectors)?;
        w.words(&self.base.offsets)?;
        w.words(&self.base.links)?;
        for layer in &self.upper {
            w.words(&layer.members)?;
            w.words(&layer.adjacency.offsets)?;
            w.words(&layer.adjacency.links)?;
        }
        let digest = w.hasher.clone().finalize();
        w.inner.write_all(&digest)?;
        w.inner.flush()?;
        Ok(w.written + DIGEST_LEN as u64)
    }

    /// Loads the index stored at `path` if it is intact and matches `binding` (see the module
    /// documentation for every check); its `ef_search` is `binding.params.ef_search`.
    pub fn read_from(
        path: &Path,
        binding: &IndexBinding<'_>,
    ) -> Result<FlatHnswIndex, StoredIndexError> {
        let file = file_label(path);
        let read_error = |source| StoredIndexError::Read {
            file: file.clone(),
            source,
        };
        let opened = File::open(path).map_err(read_error)?;
        let len = opened.metadata().map_err(read_error)?.len();
        Decoder {
            file: file.clone(),
            input: opened,
            len,
            hasher: Sha256::new(),
        }
        .decode(binding)
    }
}

/// Reads one stored index, hashing every byte read.
struct Decoder<R> {
    file: String,
    input: R,
    /// The file's length, known before reading: every length in the header is checked
    /// against it before anything is allocated.
    len: u64,
    hasher: Sha256,
}

impl<R: Read> Decoder<R> {
    fn truncated(&self, detail: impl Into<String>) -> StoredIndexError {
        StoredIndexError::Truncated {
            file: self.file.clone(),
            detail: detail.into(),
        }
    }

    fn malformed(&self, detail: impl Into<String>) -> StoredIndexError {
        StoredIndexError::Malformed {
            file: self.file.clone(),
            detail: detail.into(),
        }
    }

    fn mismatch(&self, detail: impl Into<String>) -> StoredIndexError {
        StoredIndexError::Mismatch {
            file: self.file.clone(),
            detail: detail.into(),
        }
    }

    fn invalid(&self, detail: impl Into<String>) -> StoredIndexError {
        StoredIndexError::InvalidStructure {
            file: self.file.clone(),
            detail: detail.into(),
        }
    }

    /// `read_exact`, with an early end of file reported as truncation of `what`.
    fn read_raw(&mut self, buf: &mut [u8], what: &str) -> Result<(), StoredIndexError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.truncated(format!("the file ends inside the {what}"))
            } else {
                StoredIndexError::Read {
                    file: self.file.clone(),
                    source: e,
                }
            }
        })
    }

    fn read_hashed(&mut self, buf: &mut [u8], what: &str) -> Result<(), StoredIndexError> {
        for chunk in buf.chunks_mut(CHUNK) {
            self.read_raw(chunk, what)?;
            self.hasher.update(&*chunk);
        }
        Ok(())
    }

    /// Reads `bytes` bytes of 4-byte words into a new vector of `T`, after the padding that
    /// aligns the section. `bytes` was checked against the file's length.
    fn section<T: bytemuck::Pod>(
        &mut self,
        position: &mut u64,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<T>, StoredIndexError> {
        let start = align_up(*position).expect("checked against the file length");
        let mut padding = [0u8; ALIGN as usize];
        self.read_hashed(&mut padding[..(start - *position) as usize], what)?;
        let count = usize::try_from(bytes / size_of::<T>() as u64)
            .map_err(|_| self.malformed(format!("the {what} do not fit in memory")))?;
        let mut items = vec![T::zeroed(); count];
        self.read_hashed(bytemuck::cast_slice_mut(&mut items), what)?;
        if cfg!(target_endian = "big") {
            for w in bytemuck::cast_slice_mut::<T, u32>(&mut items) {
                *w = u32::from_le(*w);
            }
        }
        *position = start + bytes;
        Ok(items)
    }

    fn decode(mut self, binding: &IndexBinding<'_>) -> Result<FlatHnswIndex, StoredIndexError> {
        // Magic, version and header length.
        let mut prefix = [0u8; PREFIX_LEN];
        let available = usize::try_from(self.len.min(PREFIX_LEN as u64)).unwrap_or(PREFIX_LEN);
        self.read_raw(&mut prefix[..available], "prefix")?;
        let magic_seen = available.min(MAGIC.len());
        if prefix[..magic_seen] != MAGIC[..magic_seen] {
            return Err(StoredIndexError::BadMagic { file: self.file });
        }
        if available < PREFIX_LEN {
            return Err(self.truncated(format!(
                "{} bytes, shorter than the {PREFIX_LEN}-byte prefix",
                self.len
            )));
        }
        self.hasher.update(prefix);
        let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().unwrap());
        let (version, header_len) = (word(8), word(12));
        if header_len > MAX_HEADER_LEN {
            return Err(self.malformed(format!(
                "a header of {header_len} bytes (at most {MAX_HEADER_LEN} are plausible)"
            )));
        }
        let header_end = (PREFIX_LEN + header_len as usize + DIGEST_LEN) as u64;
        if header_end > self.len {
            return Err(self.truncated(format!(
                "the header needs {header_end} bytes, the file has {}",
                self.len
            )));
        }

        // The header, trusted once its checksum holds.
        let mut header_bytes = vec![0u8; header_len as usize];
        self.read_hashed(&mut header_bytes, "header")?;
        let mut stored_digest = [0u8; DIGEST_LEN];
        self.read_raw(&mut stored_digest, "header")?;
        if self.hasher.clone().finalize()[..] != stored_digest {
            return Err(StoredIndexError::ChecksumMismatch {
                file: self.file,
                part: "header",
            });
        }
        self.hasher.update(stored_digest);
        if version != FORMAT_VERSION {
            return Err(StoredIndexError::UnsupportedVersion {
                file: self.file,
                found: version,
            });
        }
        let header = match postcard::take_from_bytes::<Header>(&header_bytes) {
            Ok((header, [])) => header,
            Ok((_, rest)) => {
                return Err(
                    self.malformed(format!("{} unexpected bytes after the header", rest.len()))
                );
            }
            Err(e) => return Err(self.malformed(format!("header: {e}"))),
        };
        if header.format_version != version {
            return Err(self.malformed(format!(
                "the header says format version {}, the prefix {version}",
                header.format_version
            )));
        }

        self.check_binding(&header, binding)?;
        let body_end = self.check_lengths(&header, header_end)?;

        // The sections, straight into the index's vectors.
        let mut position = header_end;
        let rows: Vec<u32> = self.section(&mut position, header.lengths.rows, "row list")?;
        let vectors: Vec<Line> = self.section(&mut position, header.lengths.vectors, "vectors")?;
        let base = Adjacency {
            offsets: self.section(
                &mut position,
                header.lengths.base.offsets,
                "layer 0 offsets",
            )?,
            links: self.section(&mut position, header.lengths.base.links, "layer 0 links")?,
        };
        let mut upper = Vec::with_capacity(header.lengths.upper.len());
        for (i, lengths) in header.lengths.upper.iter().enumerate() {
            let layer = i + 1;
            upper.push(UpperLayer {
                members: self.section(
                    &mut position,
                    lengths.members,
                    &format!("layer {layer} members"),
                )?,
                adjacency: Adjacency {
                    offsets: self.section(
                        &mut position,
                        lengths.adjacency.offsets,
                        &format!("layer {layer} offsets"),
                    )?,
                    links: self.section(
                        &mut position,
                        lengths.adjacency.links,
                        &format!("layer {layer} links"),
                    )?,
                },
            });
        }
        debug_assert_eq!(position, body_end);
        self.read_raw(&mut stored_digest, "checksum")?;
        if self.hasher.clone().finalize()[..] != stored_digest {
            return Err(StoredIndexError::ChecksumMismatch {
                file: self.file,
                part: "body",
            });
        }
        let mut extra = [0u8; 1];
        if self
            .input
            .read(&mut extra)
            .map_err(|source| StoredIndexError::Read {
                file: self.file.clone(),
                source,
            })?
            != 0
        {
            return Err(self.malformed("the file grew while being read"));
        }

        let dim = header.dim as usize;
        let builder = GraphBuilder::from_name(&header.builder)
            .ok_or_else(|| self.malformed(format!("unknown graph builder {:?}", header.builder)))?;
        let index = FlatHnswIndex {
            builder,
            dim,
            stride: dim.div_ceil(LANES) * LANES,
            metric: binding.metric,
            params: HnswParams {
                max_connections: header.max_connections as usize,
                ef_construction: header.ef_construction as usize,
                ef_search: binding.params.ef_search,
            },
            rows,
            vectors,
            base,
            upper,
            entry: header.entry,
        };
        validate_structure(&index).map_err(|detail| self.invalid(detail))?;
        if index.rows != binding.rows {
            return Err(self.mismatch(
                "built over another row list than this snapshot's pool (same length and hash)",
            ));
        }
        self.check_vectors(&index, binding.vectors, binding.source)?;
        Ok(index)
    }

    /// Rejects an index built from another snapshot or with other options: the snapshot's
    /// identity first, then the options.
    fn check_binding(&self, h: &Header, b: &IndexBinding<'_>) -> Result<(), StoredIndexError> {
        let metric = match h.metric.as_str() {
            "cosine" => Metric::Cosine,
            "dot" => Metric::Dot,
            other => return Err(self.malformed(format!("unknown metric {other:?}"))),
        };
        if !h.posts_sha256.eq_ignore_ascii_case(b.source_sha256) {
            return Err(self.mismatch(format!(
                "built for a {} with sha256 {}, this snapshot's has sha256 {}",
                b.source, h.posts_sha256, b.source_sha256
            )));
        }
        if metric != b.metric {
            return Err(self.mismatch(format!(
                "built for metric {}, the snapshot's metric is {}",
                h.metric,
                metric_name(b.metric)
            )));
        }
        if h.dim as usize != b.vectors.ncols() {
            return Err(self.mismatch(format!(
                "built for dim {}, the snapshot's dim is {}",
                h.dim,
                b.vectors.ncols()
            )));
        }
        if h.rows != b.rows.len() as u64 {
            return Err(self.mismatch(format!(
                "built over {} rows, the snapshot's pool has {}",
                h.rows,
                b.rows.len()
            )));
        }
        if h.rows_sha256 != rows_digest(b.rows) {
            return Err(self.mismatch(format!(
                "built over another list of {} rows than the snapshot's pool",
                h.rows
            )));
        }
        for (name, built, asked) in [
            (
                "max_connections",
                h.max_connections as usize,
                b.params.max_connections,
            ),
            (
                "ef_construction",
                h.ef_construction as usize,
                b.params.ef_construction,
            ),
        ] {
            if built != asked {
                return Err(
                    self.mismatch(format!("built for {name} {built}, options ask for {asked}"))
                );
            }
        }
        Ok(())
    }

    /// Checks that the section lengths agree with the row count and dimension, and add up to
    /// the file's length; returns where the body ends.
    fn check_lengths(&self, h: &Header, header_end: u64) -> Result<u64, StoredIndexError> {
        let malformed = |what: String| self.malformed(what);
        let n = h.rows;
        if n > u64::from(u32::MAX) {
            return Err(malformed(format!(
                "{n} rows, more than positions can number"
            )));
        }
        if h.dim == 0 {
            return Err(malformed("dim 0".into()));
        }
        let stride = u64::from(h.dim).div_ceil(LANES as u64) * LANES as u64;
        let l = &h.lengths;
        let expect = |what: &str, got: u64, want: Option<u64>| match want {
            Some(w) if w == got => Ok(()),
            _ => Err(malformed(format!(
                "the {what} take {got} bytes, {n} rows of dim {} need {}",
                h.dim,
                want.map_or_else(|| "more than fits".into(), |w| w.to_string())
            ))),
        };
        expect("row list", l.rows, n.checked_mul(4))?;
        expect(
            "vectors",
            l.vectors,
            n.checked_mul(stride).and_then(|f| f.checked_mul(4)),
        )?;
        expect("layer 0 offsets", l.base.offsets, Some((n + 1) * 4))?;
        let words = |what: String, bytes: u64| {
            if bytes.is_multiple_of(4) {
                Ok(())
            } else {
                Err(malformed(format!(
                    "the {what} take {bytes} bytes, not a whole number of 4-byte values"
                )))
            }
        };
        words("layer 0 links".into(), l.base.links)?;
        for (i, layer) in l.upper.iter().enumerate() {
            let layer_no = i + 1;
            words(format!("layer {layer_no} members"), layer.members)?;
            words(format!("layer {layer_no} links"), layer.adjacency.links)?;
            if layer.adjacency.offsets != layer.members.saturating_add(4) {
                return Err(malformed(format!(
                    "layer {layer_no} has {} bytes of members but {} bytes of offsets \
                     (one more offset than members is needed)",
                    layer.members, layer.adjacency.offsets
                )));
            }
        }
        let mut sections = vec![l.rows, l.vectors, l.base.offsets, l.base.links];
        for layer in &l.upper {
            sections.extend([
                layer.members,
                layer.adjacency.offsets,
                layer.adjacency.links,
            ]);
        }
        let body_end = sections
            .iter()
            .try_fold(header_end, |at, &len| align_up(at)?.checked_add(len))
            .ok_or_else(|| malformed("section lengths overflow".into()))?;
        let total = body_end
            .checked_add(DIGEST_LEN as u64)
            .ok_or_else(|| malformed("section lengths overflow".into()))?;
        if total > self.len {
            return Err(self.truncated(format!(
                "the header describes {total} bytes, the file has {}",
                self.len
            )));
        }
        if total < self.len {
            return Err(malformed(format!(
                "{} bytes after the end the header describes ({total} bytes)",
                self.len - total
            )));
        }
        Ok(body_end)
    }

    /// The stored vectors must be the snapshot's rows, bit for bit, with zero padding.
    fn check_vectors(
        &self,
        index: &FlatHnswIndex,
        vectors: &Array2<f32>,
        source: &str,
    ) -> Result<(), StoredIndexError> {
        let vectors = vectors.as_standard_layout();
        let data = index.data();
        for (p, &row) in index.rows.iter().enumerate() {
            let stored = &data[p * index.stride..(p + 1) * index.stride];
            let (values, padding) = stored.split_at(index.dim);
            if padding.iter().any(|x| x.to_bits() != 0) {
                return Err(self.invalid(format!("the padding of position {p} is not zero")));
            }
            let wanted = vectors.row(row as usize);
            let wanted = wanted
                .as_slice()
                .expect("standard layout rows are contiguous");
            if bytemuck::cast_slice::<f32, u32>(values) != bytemuck::cast_slice::<f32, u32>(wanted)
            {
                return Err(self.mismatch(format!(
                    "its vector for {} row {} (numpy index [{row}]) differs from the \
                     snapshot's",
                    source,
                    row as u64 + 1
                )));
            }
        }
        Ok(())
    }
}

/// Checks everything a search relies on, so that no stored file can make one panic or read out
/// of bounds: CSR offsets start at 0, never decrease and end at the number of links; every link
/// is a position; upper-layer members are sorted, unique positions; the entry point is a
/// position on the top layer.
fn validate_structure(index: &FlatHnswIndex) -> Result<(), String> {
    let n = index.rows.len();
    if index.vectors.len() * LANES != n * index.stride {
        return Err(format!(
            "{} vector lines for {n} positions",
            index.vectors.len()
        ));
    }
    check_adjacency(&index.base, n, n, "layer 0")?;
    for (i, layer) in index.upper.iter().enumerate() {
        let name = format!("layer {}", i + 1);
        if layer.members.is_empty() {
            return Err(format!("{name} has no members"));
        }
        if let Some(w) = layer.members.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "{name} members are not sorted and unique ({} before {})",
                w[0], w[1]
            ));
        }
        let last = *layer.members.last().expect("not empty");
        if last as usize >= n {
            return Err(format!("{name} has member {last}, past the {n} positions"));
        }
        check_adjacency(&layer.adjacency, layer.members.len(), n, &name)?;
    }
    if n == 0 {
        if index.entry != 0 || !index.upper.is_empty() {
            return Err("an empty graph has an entry point or layers".into());
        }
        return Ok(());
    }
    let entry = index.entry;
    if entry as usize >= n {
        return Err(format!("entry point {entry} is past the {n} positions"));
    }
    if let Some(top) = index.upper.last()
        && top.members.binary_search(&entry).is_err()
    {
        return Err(format!(
            "entry point {entry} is not on the top layer ({})",
            index.upper.len()
        ));
    }
    Ok(())
}

/// `nodes` neighbour lists whose links are positions below `n`.
fn check_adjacency(a: &Adjacency, nodes: usize, n: usize, name: &str) -> Result<(), String> {
    if a.offsets.len() != nodes + 1 {
        return Err(format!(
            "{name} has {} offsets for {nodes} nodes",
            a.offsets.len()
        ));
    }
    if a.offsets[0] != 0 {
        return Err(format!("{name} offsets start at {}, not 0", a.offsets[0]));
    }
    if let Some(i) = a.offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!(
            "{name} offsets decrease at node {i} ({} then {})",
            a.offsets[i],
            a.offsets[i + 1]
        ));
    }
    let end = a.offsets[nodes] as usize;
    if end != a.links.len() {
        return Err(format!(
            "{name} offsets end at {end}, but there are {} links",
            a.links.len()
        ));
    }
    if let Some(at) = a.links.iter().position(|&l| l as usize >= n) {
        let node = a.offsets.partition_point(|&o| o as usize <= at) - 1;
        return Err(format!(
            "{name}: node {node} links to {}, past the {n} positions",
            a.links[at]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
