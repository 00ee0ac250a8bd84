//! Loading and validating a snapshot directory.
//!
//! Every file is read once: the bytes read are hashed for the manifest check and parsed from
//! memory (`.npy` data goes straight into the `Vec<f32>` that becomes the matrix). Problems
//! are collected rather than returned at the first one, so that a single run lists (up to
//! [`MAX_ISSUES`](super::error::MAX_ISSUES)) everything an exporter has to fix.
//!
//! Strictness: unknown keys in `manifest.json` and in every record (including `stats`) are
//! errors, so that a misspelt key cannot silently leave the real field at its default.
//! Language codes are stored in lower case (`pt-BR` loads as `pt-br`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use ndarray::Array2;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};

use super::error::Issues;
use super::records::{self, Parsed};
use super::write::sha256_hex;
use super::{FORMAT_VERSION, Manifest, Metric, Snapshot, SnapshotError, files, npy};

/// Loads and validates the snapshot in `dir`. Under `Metric::Cosine` vectors are normalised.
///
/// On failure every defect found is listed with its file, line (or `.npy` row) and field.
/// A missing or unreadable `manifest.json` (or an unsupported `format_version`) stops the
/// check at once, since nothing else can be interpreted without it.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let mut issues = Issues::default();
    let Some(manifest) = read_manifest(dir, &mut issues) else {
        return Err(issues.into_error());
    };

    let posts = load_pair(dir, &PAIRS[0], &manifest, &mut issues, records::parse_posts);
    let users = load_pair(dir, &PAIRS[1], &manifest, &mut issues, records::parse_users);
    let hashtags = load_pair(
        dir,
        &PAIRS[2],
        &manifest,
        &mut issues,
        records::parse_hashtags,
    );
    if let Some(parsed) = &posts.records
        && parsed.line_count == 0
    {
        issues.add(
            files::POSTS_JSONL,
            None,
            None,
            "no posts: a snapshot needs at least one",
        );
    }
    check_listed_files_exist(&manifest, (&posts, &users, &hashtags), &mut issues);

    if !issues.is_empty() {
        return Err(issues.into_error());
    }
    // No issues means every required part is present and valid.
    let (Some(dim), Some(metric), Some(created_at), Some(model_version), Some(files)) = (
        manifest.dim,
        manifest.metric,
        manifest.created_at,
        manifest.model_version,
        manifest.files,
    ) else {
        unreachable!("a manifest without issues has every required field")
    };
    let (posts, post_vectors) = posts.into_parts(dim);
    let (users, user_vectors) = users.into_parts(dim);
    let (hashtags, hashtag_vectors) = hashtags.into_parts(dim);
    Ok(Snapshot {
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            model_version,
            created_at,
            dim,
            metric,
            files,
            scoring: manifest.scoring.unwrap_or_default(),
        },
        posts,
        post_vectors,
        users,
        user_vectors,
        hashtags,
        hashtag_vectors,
    })
}

/// An `.npy` / `.jsonl` pair.
struct PairSpec {
    npy: &'static str,
    jsonl: &'static str,
    required: bool,
}

const PAIRS: [PairSpec; 3] = [
    PairSpec {
        npy: files::POSTS_NPY,
        jsonl: files::POSTS_JSONL,
        required: true,
    },
    PairSpec {
        npy: files::USERS_NPY,
        jsonl: files::USERS_JSONL,
        required: false,
    },
    PairSpec {
        npy: files::HASHTAGS_NPY,
        jsonl: files::HASHTAGS_JSONL,
        required: false,
    },
];

/// What is known of a pair after reading and checking it.
struct LoadedPair<T> {
    spec: &'static PairSpec,
    npy_present: bool,
    jsonl_present: bool,
    /// `true` once the absence of a file of this pair has been reported.
    absence_reported: bool,
    /// Validated (and, under cosine, normalised) data, when the `.npy` could be read.
    matrix: Option<(usize, usize, Vec<f32>)>,
    records: Option<Parsed<T>>,
}

impl<T> LoadedPair<T> {
    /// The records and their `[n, dim]` matrix; an absent optional pair gives `[0, dim]`.
    fn into_parts(self, dim: usize) -> (Vec<T>, Array2<f32>) {
        let records = self.records.map(|p| p.records).unwrap_or_default();
        let matrix = match self.matrix {
            Some((rows, cols, data)) => {
                Array2::from_shape_vec((rows, cols), data).expect("length checked on read")
            }
            None => Array2::zeros((0, dim)),
        };
        (records, matrix)
    }
}

/// A file's fate: absent, unreadable (already reported), or read with its sha256.
enum Fetched<T, H = String> {
    Absent,
    Unreadable,
    Read { sha256: H, content: T },
}

/// An `.npy` file as read: its header shape if the header is sound, and its values if the
/// whole file is a well-formed float32 matrix.
struct NpyContent {
    shape: Option<(usize, usize)>,
    values: Option<Vec<f32>>,
}

/// Reads an `.npy` file, hashing every byte and reading the data straight into a `Vec<f32>`.
fn read_npy(dir: &Path, name: &str, issues: &mut Issues) -> Fetched<NpyContent> {
    let path = dir.join(name);
    let read = File::open(&path).and_then(|file| read_npy_file(file, name, issues));
    match read {
        Ok(Some(fetched)) => fetched,
        // The header is broken (and reported): hash the whole file for the checksum check,
        // which tells a corrupted copy from a file exported wrongly.
        Ok(None) => match std::fs::read(&path) {
            Ok(bytes) => Fetched::Read {
                sha256: sha256_hex(&bytes),
                content: NpyContent {
                    shape: None,
                    values: None,
                },
            },
            // Reported already, as the header's read error.
            Err(_) => Fetched::Unreadable,
        },
        Err(e) => cannot_read(name, e, issues),
    }
}

fn cannot_read<T, H>(name: &str, e: io::Error, issues: &mut Issues) -> Fetched<T, H> {
    if e.kind() == io::ErrorKind::NotFound {
        return Fetched::Absent;
    }
    issues.add(name, None, None, format!("cannot read: {e}"));
    Fetched::Unreadable
}

/// Reads an open `.npy` file; `Ok(None)` when its header is broken (reported).
fn read_npy_file(
    mut file: File,
    name: &str,
    issues: &mut Issues,
) -> io::Result<Option<Fetched<NpyContent>>> {
    let file_len = file.metadata()?.len();
    let (header, raw) = match npy::read_header(&mut file) {
        Ok(read) => read,
        Err(e) => {
            issues.add(name, None, e.field, e.message);
            return Ok(None);
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(&raw);
    let data_len = file_len.saturating_sub(raw.len() as u64);
    let mut content = NpyContent {
        shape: None,
        values: None,
    };
    match header.f32_matrix_shape() {
        Err(e) => issues.add(name, None, e.field, e.message),
        Ok((rows, cols)) => {
            content.shape = Some((rows, cols));
            match npy::f32_data_len(rows, cols) {
                Some(expected) if expected as u64 == data_len => {
                    let values =
                        npy::read_f32_values(&mut file, rows * cols, |b| hasher.update(b))?;
                    content.values = Some(values);
                }
                Some(expected) => {
                    let what = if expected as u64 > data_len {
                        "the file is truncated"
                    } else {
                        "the file has extra bytes after the data"
                    };
                    issues.add(
                        name,
                        None,
                        None,
                        format!(
                            "{what}: shape ({rows}, {cols}) of float32 needs {expected} data \
                             bytes, found {data_len}"
                        ),
                    );
                }
                None => issues.add(
                    name,
                    None,
                    Some("shape"),
                    format!("shape ({rows}, {cols}) is too large"),
                ),
            }
        }
    }
    // Hash whatever is left too (all the data when it was not read as values, otherwise
    // normally nothing), so that the checksum covers the whole file.
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)?;
    if !rest.is_empty() && content.values.take().is_some() {
        issues.add(name, None, None, "the file changed while being read");
    }
    hasher.update(&rest);
    Ok(Some(Fetched::Read {
        sha256: hex(&hasher.finalize()),
        content,
    }))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Reads, hashes and checks one pair, reporting absence, listing and checksum problems, the
/// `.npy` header and values, the JSONL records, and their agreement.
fn load_pair<T: Send>(
    dir: &Path,
    spec: &'static PairSpec,
    manifest: &PartialManifest,
    issues: &mut Issues,
    parse: fn(&str, &[u8], &mut Issues) -> Parsed<T>,
) -> LoadedPair<T> {
    let jsonl_bytes = match std::fs::read(dir.join(spec.jsonl)) {
        Ok(bytes) => Fetched::Read {
            sha256: (),
            content: bytes,
        },
        Err(e) => cannot_read(spec.jsonl, e, issues),
    };
    // Three independent jobs run side by side: reading, hashing and checking the `.npy`;
    // hashing the JSONL; parsing the JSONL (itself split in two when large). Each has its
    // own issue list, merged below in a fixed order so that reports do not depend on timing.
    let mut npy_issues = Issues::default();
    let mut jsonl_issues = Issues::default();
    let (npy_file, jsonl_sha, records) = std::thread::scope(|s| {
        let npy = s.spawn(|| {
            let mut fetched = read_npy(dir, spec.npy, &mut npy_issues);
            if let Fetched::Read {
                content:
                    NpyContent {
                        shape: Some((_, cols)),
                        values: Some(values),
                    },
                ..
            } = &mut fetched
            {
                check_rows(spec.npy, *cols, values, manifest.metric, &mut npy_issues);
            }
            fetched
        });
        let (sha, records) = match &jsonl_bytes {
            Fetched::Read { content, .. } => {
                let sha = s.spawn(|| sha256_hex(content));
                let records = parse(spec.jsonl, content, &mut jsonl_issues);
                (Some(join(sha)), Some(records))
            }
            _ => (None, None),
        };
        (join(npy), sha, records)
    });
    let jsonl_file = match jsonl_bytes {
        Fetched::Read { .. } => Fetched::Read {
            sha256: jsonl_sha.expect("hashed when read"),
            content: (),
        },
        Fetched::Absent => Fetched::Absent,
        Fetched::Unreadable => Fetched::Unreadable,
    };
    let mut pair = LoadedPair {
        spec,
        npy_present: !matches!(npy_file, Fetched::Absent),
        jsonl_present: !matches!(jsonl_file, Fetched::Absent),
        absence_reported: false,
        matrix: None,
        records,
    };
    for (name, present, other, other_present) in [
        (spec.npy, pair.npy_present, spec.jsonl, pair.jsonl_present),
        (spec.jsonl, pair.jsonl_present, spec.npy, pair.npy_present),
    ] {
        if present {
            continue;
        }
        if spec.required {
            issues.add(name, None, None, "missing required file");
            pair.absence_reported = true;
        } else if other_present {
            let stem = name.split('.').next().unwrap_or(name);
            issues.add(
                name,
                None,
                None,
                format!(
                    "missing, but {other} is present: {stem}.npy and {stem}.jsonl come as a pair"
                ),
            );
            pair.absence_reported = true;
        }
    }

    for (name, sha256) in [
        (spec.npy, fetched_sha(&npy_file)),
        (spec.jsonl, fetched_sha(&jsonl_file)),
    ] {
        if let Some(actual) = sha256 {
            check_checksum(manifest, name, actual, issues);
        }
    }

    issues.extend(npy_issues);
    issues.extend(jsonl_issues);
    let npy = match npy_file {
        Fetched::Read { content, .. } => Some(content),
        _ => None,
    };

    if let Some(NpyContent { shape, values }) = npy {
        if let Some((rows, cols)) = shape {
            if let Some(dim) = manifest.dim
                && cols != dim
            {
                issues.add(
                    spec.npy,
                    None,
                    Some("shape"),
                    format!(
                        "shape ({rows}, {cols}) has {cols} columns but manifest.json `dim` is {dim}"
                    ),
                );
            }
            if let Some(parsed) = &pair.records
                && parsed.line_count != rows
            {
                issues.add(
                    spec.npy,
                    None,
                    Some("shape"),
                    format!(
                        "shape ({rows}, {cols}) has {rows} rows but {} has {} lines \
                         (line i describes row i)",
                        spec.jsonl, parsed.line_count
                    ),
                );
            }
        }
        if let (Some((rows, cols)), Some(values)) = (shape, values) {
            pair.matrix = Some((rows, cols, values));
        }
    }
    pair
}

/// Joins a scoped thread, passing on its panic.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn fetched_sha<T>(f: &Fetched<T>) -> Option<&str> {
    match f {
        Fetched::Read { sha256, .. } => Some(sha256),
        _ => None,
    }
}

/// A file that is present must be listed in `files`, with the right checksum.
fn check_checksum(manifest: &PartialManifest, name: &str, actual: &str, issues: &mut Issues) {
    let Some(listed) = &manifest.files else {
        // `files` is missing or malformed: already reported.
        return;
    };
    let field = format!("files.{name}");
    match listed.get(name) {
        None => issues.add(
            files::MANIFEST,
            None,
            Some(&field),
            format!(
                "{name} is present but not listed in `files` (every data file needs its sha256)"
            ),
        ),
        Some(expected) if is_sha256_hex(expected) && !expected.eq_ignore_ascii_case(actual) => {
            issues.add(
                files::MANIFEST,
                None,
                Some(&field),
                format!(
                    "checksum mismatch: {name} has sha256 {actual}, the manifest lists {expected}"
                ),
            )
        }
        Some(_) => {}
    }
}

/// Every file listed in `files` must exist (absences already reported as missing are not
/// repeated).
fn check_listed_files_exist<A, B, C>(
    manifest: &PartialManifest,
    pairs: (&LoadedPair<A>, &LoadedPair<B>, &LoadedPair<C>),
    issues: &mut Issues,
) {
    let Some(listed) = &manifest.files else {
        return;
    };
    let states = [
        (
            pairs.0.spec,
            pairs.0.npy_present,
            pairs.0.jsonl_present,
            pairs.0.absence_reported,
        ),
        (
            pairs.1.spec,
            pairs.1.npy_present,
            pairs.1.jsonl_present,
            pairs.1.absence_reported,
        ),
        (
            pairs.2.spec,
            pairs.2.npy_present,
            pairs.2.jsonl_present,
            pairs.2.absence_reported,
        ),
    ];
    for (spec, npy_present, jsonl_present, absence_reported) in states {
        for (name, present) in [(spec.npy, npy_present), (spec.jsonl, jsonl_present)] {
            if !present && !absence_reported && listed.contains_key(name) {
                issues.add(
                    files::MANIFEST,
                    None,
                    Some(&format!("files.{name}")),
                    format!("lists {name}, which is absent"),
                );
            }
        }
    }
}

/// Rejects NaN and infinite values, and zero rows under cosine; under cosine, normalises each
/// valid row in place (the result is discarded if the snapshot turns out invalid).
fn check_rows(
    name: &str,
    cols: usize,
    values: &mut [f32],
    metric: Option<Metric>,
    issues: &mut Issues,
) {
    if cols == 0 {
        return;
    }
    for (r, row) in values.chunks_exact_mut(cols).enumerate() {
        if issues.is_full() {
            return;
        }
        let message = match prepare_row(row, metric) {
            Ok(()) => continue,
            Err(RowDefect::NonFinite { column, what }) => {
                format!("row {} (numpy index [{r}, {column}]) is {what}", r + 1)
            }
            Err(RowDefect::Zero) => format!(
                "row {} (numpy index [{r}]) is a zero vector, which has no direction under the \
                 cosine metric",
                r + 1
            ),
        };
        issues.add(name, Some(r + 1), None, message);
    }
}

/// Why an embedding cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowDefect {
    NonFinite {
        column: usize,
        what: &'static str,
    },
    /// A zero vector under cosine: it has no direction.
    Zero,
}

/// Checks one embedding the way a `.npy` row is checked (finite; under cosine, not zero) and
/// under cosine normalises it in place.
pub(super) fn prepare_row(row: &mut [f32], metric: Option<Metric>) -> Result<(), RowDefect> {
    // f64 squares cannot overflow for any finite f32, so a non-finite sum means a non-finite
    // value; the slow search for it runs only then.
    let sum_sq = sum_of_squares(row);
    if !sum_sq.is_finite() {
        let (column, v) = row
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .expect("a non-finite sum has a non-finite term");
        let what = if v.is_nan() { "NaN" } else { "infinite" };
        return Err(RowDefect::NonFinite { column, what });
    }
    if metric == Some(Metric::Cosine) {
        if sum_sq == 0.0 {
            return Err(RowDefect::Zero);
        }
        let inv = 1.0 / sum_sq.sqrt();
        for v in row {
            *v = (f64::from(*v) * inv) as f32;
        }
    }
    Ok(())
}

/// Σ v², in f64, with independent partial sums so that the loop vectorises.
fn sum_of_squares(row: &[f32]) -> f64 {
    let mut partial = [0f64; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p += f64::from(v) * f64::from(v);
        }
    }
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    partial.iter().sum::<f64>() + rest
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The manifest fields that passed validation (`None` where a field was missing or invalid,
/// which has been reported).
struct PartialManifest {
    model_version: Option<String>,
    created_at: Option<String>,
    dim: Option<usize>,
    metric: Option<Metric>,
    files: Option<BTreeMap<String, String>>,
    scoring: Option<serde_json::Map<String, serde_json::Value>>,
}

const MANIFEST_KEYS: [&str; 7] = [
    "format_version",
    "model_version",
    "created_at",
    "dim",
    "metric",
    "files",
    "scoring",
];

/// The top-level entries of a JSON object in order, duplicates kept (a plain map would let
/// a repeated key silently override the first).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads and checks `manifest.json`. Returns `None` when nothing else can be checked: the
/// manifest is missing, unreadable, not a JSON object, or of an unknown `format_version`.
fn read_manifest(dir: &Path, issues: &mut Issues) -> Option<PartialManifest> {
    const M: &str = files::MANIFEST;
    let bytes = match std::fs::read(dir.join(M)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            issues.add(M, None, None, "missing required file");
            return None;
        }
        Err(e) => {
            issues.add(M, None, None, format!("cannot read: {e}"));
            return None;
        }
    };
    let entries = match serde_json::from_slice::<Entries>(&bytes) {
        Ok(Entries(entries)) => entries,
        Err(e) => {
            let line = (e.line() > 0).then_some(e.line());
            let message = if bytes.starts_with(b"\xEF\xBB\xBF") {
                "the file starts with a UTF-8 byte-order mark; write it without one".to_string()
            } else {
                records::describe_json_error(".", &e).1
            };
            issues.add(M, line, None, message);
            return None;
        }
    };
    let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);

    match get("format_version") {
        None => {
            issues.add(M, None, Some("format_version"), "required field is missing");
            return None;
        }
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
        Some(v) => {
            issues.add(
                M,
                None,
                Some("format_version"),
                format!("unsupported format_version {v}: this build reads format {FORMAT_VERSION}"),
            );
            return None;
        }
    }

    for (i, (key, _)) in entries.iter().enumerate() {
        if !MANIFEST_KEYS.contains(&key.as_str()) {
            issues.add(
                M,
                None,
                Some(key),
                format!(
                    "unknown key `{key}`, expected one of {} (keys are strict so that a typo \
                     cannot silently become a default)",
                    MANIFEST_KEYS.join(", ")
                ),
            );
        } else if entries[..i].iter().any(|(k, _)| k == key) {
            issues.add(M, None, Some(key), "key appears more than once");
        }
    }

    let mut required = |key: &str| {
        let v = get(key);
        if v.is_none() {
            issues.add(M, None, Some(key), "required field is missing");
        }
        v
    };
    let model_version = required("model_version");
    let created_at = required("created_at");
    let dim = required("dim");
    let metric = required("metric");
    let files_value = required("files");

    let mut manifest = PartialManifest {
        model_version: None,
        created_at: None,
        dim: None,
        metric: None,
        files: None,
        scoring: None,
    };
    match model_version {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            manifest.model_version = Some(s.clone())
        }
        Some(v) => issues.add(
            M,
            None,
            Some("model_version"),
            format!("must be a non-empty string, got {v}"),
        ),
        None => {}
    }
    match created_at {
        Some(serde_json::Value::String(s)) if is_rfc3339(s) => {
            manifest.created_at = Some(s.clone())
        }
        Some(v) => issues.add(
            M,
            None,
            Some("created_at"),
            format!(
                "must be an RFC 3339 timestamp with a time zone, such as \
                 \"2025-01-19T08:00:00Z\", got {v}"
            ),
        ),
        None => {}
    }
    if let Some(v) = dim {
        match v.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if d > 0 => manifest.dim = Some(d),
            _ => issues.add(
                M,
                None,
                Some("dim"),
                format!("must be a positive integer, got {v}"),
            ),
        }
    }
    match metric {
        Some(serde_json::Value::String(s)) if s == "cosine" => {
            manifest.metric = Some(Metric::Cosine)
        }
        Some(serde_json::Value::String(s)) if s == "dot" => manifest.metric = Some(Metric::Dot),
        Some(v) => issues.add(
            M,
            None,
            Some("metric"),
            format!("unknown metric {v}, expected one of cosine, dot"),
        ),
        None => {}
    }
    match files_value {
        Some(serde_json::Value::Object(map)) => {
            let mut listed = BTreeMap::new();
            for (name, sha) in map {
                let field = format!("files.{name}");
                if !files::DATA_FILES.contains(&name.as_str()) {
                    issues.add(
                        M,
                        None,
                        Some(&field),
                        format!(
                            "unknown file `{name}`: the data files of a snapshot are {}",
                            files::DATA_FILES.join(", ")
                        ),
                    );
                    continue;
                }
                match sha {
                    serde_json::Value::String(s) if is_sha256_hex(s) => {}
                    _ => issues.add(
                        M,
                        None,
                        Some(&field),
                        format!("must be a sha256 digest as 64 hex characters, got {sha}"),
                    ),
                }
                listed.insert(name.clone(), sha.as_str().unwrap_or_default().to_string());
            }
            manifest.files = Some(listed);
        }
        Some(v) => issues.add(
            M,
            None,
            Some("files"),
            format!("must be a JSON object mapping file names to sha256 digests, got {v}"),
        ),
        None => {}
    }
    match get("scoring") {
        Some(serde_json::Value::Object(map)) => manifest.scoring = Some(map.clone()),
        Some(v) => issues.add(
            M,
            None,
            Some("scoring"),
            format!("must be a JSON object, got {v}"),
        ),
        None => manifest.scoring = Some(Default::default()),
    }
    Some(manifest)
}

/// `true` for an RFC 3339 date-time with a time zone (`2025-01-19T08:00:00Z`,
/// `2025-01-19T09:00:00.5+01:00`).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let (Some(oh), Some(om)) = (num(i + 1..i + 3), num(i + 4..i + 6)) else {
                return false;
            };
            sep(i + 3, b":") && oh <= 23 && om <= 59 && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        for ok in [
            "2025-01-19T08:00:00Z",
            "2025-01-19t08:00:00z",
            "2024-02-29T23:59:60.123+01:00",
            "2025-01-19 08:00:00-05:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2025-01-19",
            "2025-01-19T08:00:00",
            "2025-01-19T08:00:00.Z",
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-01-19T24:00:00Z",
            "2025-01-19T08:00:00+0100",
            "2025-01-19T08:00:00Zjunk",
            "1737244800",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
