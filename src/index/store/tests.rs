use std::collections::HashSet;

use super::*;
use crate::index::{ExactIndex, HNSW_RS_BUILDER, Neighbor, NeighborIndex, synthetic};

const POSTS_SHA: &str = "5f2b4b1c3a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
const N_ROWS: usize = 400;
/// 20 floats per row, stored in 32: the padding is exercised.
const DIM: usize = 20;

struct Fixture {
    vectors: Array2<f32>,
    rows: Vec<u32>,
    metric: Metric,
    params: HnswParams,
    index: FlatHnswIndex,
}

/// A graph over a pool that is not all of the matrix's rows (as organic posts are not).
fn fixture(metric: Metric) -> Fixture {
    let mut vectors = synthetic::clustered(N_ROWS, DIM, 6, 0.6, 3);
    if metric == Metric::Dot {
        // Norms from 0.5 to 2: the dot metric ranks by them too.
        for (i, mut row) in vectors.rows_mut().into_iter().enumerate() {
            row *= 0.5 + (i % 7) as f32 * 0.25;
        }
    }
    let rows: Vec<u32> = (0..N_ROWS as u32).filter(|r| r % 5 != 2).collect();
    let params = HnswParams {
        max_connections: 8,
        ef_construction: 60,
        ef_search: 40,
    };
    let index = FlatHnswIndex::build(&vectors, &rows, metric, params);
    assert!(index.max_level() >= 1, "the fixture needs upper layers");
    Fixture {
        vectors,
        rows,
        metric,
        params,
        index,
    }
}

impl Fixture {
    fn binding(&self) -> IndexBinding<'_> {
        IndexBinding {
            source: "posts.npy",
            source_sha256: POSTS_SHA,
            vectors: &self.vectors,
            rows: &self.rows,
            metric: self.metric,
            params: self.params,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        encode(&self.index, FORMAT_VERSION)
    }
}

fn encode(index: &FlatHnswIndex, version: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let written = index.encode(&mut bytes, POSTS_SHA, version).unwrap();
    assert_eq!(written, bytes.len() as u64);
    bytes
}

/// Decodes a stored index from memory, as `read_from` does from a file.
fn decode(bytes: &[u8], binding: &IndexBinding<'_>) -> Result<FlatHnswIndex, StoredIndexError> {
    Decoder {
        file: "posts.index".to_string(),
        input: bytes,
        len: bytes.len() as u64,
        hasher: Sha256::new(),
    }
    .decode(binding)
}

/// Where the header's checksum ends (the first section starts at the next multiple of 64).
fn header_end(bytes: &[u8]) -> usize {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    PREFIX_LEN + header_len + DIGEST_LEN
}

/// Recomputes the final checksum after an edit of the body, so only the edit is wrong.
fn reseal(bytes: &mut [u8]) {
    let body_end = bytes.len() - DIGEST_LEN;
    let digest = Sha256::digest(&bytes[..body_end]);
    bytes[body_end..].copy_from_slice(&digest);
}

fn bits(hits: &[Neighbor]) -> Vec<(u32, u32)> {
    hits.iter()
        .map(|n| (n.row, n.similarity.to_bits()))
        .collect()
}

fn assert_same_arrays(a: &FlatHnswIndex, b: &FlatHnswIndex) {
    assert_eq!(
        (a.dim, a.stride, a.metric, a.entry),
        (b.dim, b.stride, b.metric, b.entry)
    );
    assert_eq!(a.rows, b.rows);
    assert_eq!(
        bytemuck::cast_slice::<Line, u32>(&a.vectors),
        bytemuck::cast_slice::<Line, u32>(&b.vectors)
    );
    assert_eq!(a.base.offsets, b.base.offsets);
    assert_eq!(a.base.links, b.base.links);
    assert_eq!(a.upper.len(), b.upper.len());
    for (x, y) in a.upper.iter().zip(&b.upper) {
        assert_eq!(x.members, y.members);
        assert_eq!(x.adjacency.offsets, y.adjacency.offsets);
        assert_eq!(x.adjacency.links, y.adjacency.links);
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_stored_index_searches_bit_identically_under_both_metrics() {
    for metric in [Metric::Cosine, Metric::Dot] {
        let f = fixture(metric);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posts.index");
        let size = f.index.write_to(&path, POSTS_SHA).unwrap();
        assert_eq!(size, fs::metadata(&path).unwrap().len());
        assert_eq!(
            file_names(dir.path()),
            ["posts.index"],
            "no temporary file left"
        );

        let searched_wider = HnswParams {
            ef_search: 90,
            ..f.params
        };
        let binding = IndexBinding {
            params: searched_wider,
            ..f.binding()
        };
        let loaded = FlatHnswIndex::read_from(&path, &binding).unwrap();
        assert_same_arrays(&f.index, &loaded);
        assert_eq!(
            loaded.params(),
            searched_wider,
            "ef_search comes from the caller"
        );

        let exact = ExactIndex::build(&f.vectors, &f.rows, metric);
        let keep = |row: u32| !row.is_multiple_of(3);
        let queries = synthetic::queries(150, DIM, 6, 0.6, 4);
        let (mut found, mut relevant) = (0usize, 0usize);
        for q in queries.rows() {
            let q = q.as_slice().unwrap();
            for (k, ef) in [(1, 40), (10, 40), (10, 90), (50, 60)] {
                let want = f.index.search_with_ef(q, k, ef, None);
                assert_eq!(want.len(), k);
                assert_eq!(bits(&loaded.search_with_ef(q, k, ef, None)), bits(&want));
                let want_filtered = f.index.search_with_ef(q, k, ef, Some(&keep));
                assert!(want_filtered.iter().all(|n| keep(n.row)));
                assert_eq!(
                    bits(&loaded.search_with_ef(q, k, ef, Some(&keep))),
                    bits(&want_filtered)
                );
            }
            // Not two empty answers agreeing: the loaded graph finds the true neighbours.
            let truth: HashSet<u32> = exact.search(q, 10, None).iter().map(|n| n.row).collect();
            found += loaded
                .search(q, 10, None)
                .iter()
                .filter(|n| truth.contains(&n.row))
                .count();
            relevant += truth.len();
        }
        let recall = found as f64 / relevant as f64;
        assert!(recall > 0.9, "{metric:?}: recall@10 {recall}");

        // Overwriting replaces the file, again without leftovers.
        f.index.write_to(&path, POSTS_SHA).unwrap();
        assert_eq!(file_names(dir.path()), ["posts.index"]);
    }
}

#[test]
fn an_empty_index_round_trips() {
    let vectors = synthetic::clustered(10, 8, 2, 0.5, 1);
    let params = HnswParams::default();
    let index = FlatHnswIndex::build(&vectors, &[], Metric::Cosine, params);
    let binding = IndexBinding {
        source: "posts.npy",
        source_sha256: POSTS_SHA,
        vectors: &vectors,
        rows: &[],
        metric: Metric::Cosine,
        params,
    };
    let loaded = decode(&encode(&index, FORMAT_VERSION), &binding).unwrap();
    assert_eq!(loaded.len(), 0);
    assert!(loaded.search(&[1.0; 8], 5, None).is_empty());
}

#[test]
fn an_index_for_another_snapshot_or_other_options_is_rejected_with_the_reason() {
    let f = fixture(Metric::Cosine);
    let bytes = f.bytes();
    let good = f.binding();
    decode(&bytes, &good).expect("the fixture's own binding matches");

    let other_sha = "0".repeat(64);
    let mut swapped = f.rows.clone();
    swapped.swap(3, 4);
    let fewer = &f.rows[1..];
    let wider = synthetic::clustered(N_ROWS, DIM + 4, 6, 0.6, 3);
    let mut edited = f.vectors.clone();
    edited[[f.rows[7] as usize, 5]] += 1e-3;
    let params = |max_connections, ef_construction| HnswParams {
        max_connections,
        ef_construction,
        ..f.params
    };
    let cases: Vec<(IndexBinding<'_>, String)> = vec![
        (
            IndexBinding {
                source: "posts.npy",
                source_sha256: &other_sha,
                ..good
            },
            format!(
                "built for a posts.npy with sha256 {POSTS_SHA}, this snapshot's has sha256 {other_sha}"
            ),
        ),
        (
            IndexBinding {
                rows: &swapped,
                ..good
            },
            format!(
                "built over another list of {} rows than the snapshot's pool",
                f.rows.len()
            ),
        ),
        (
            IndexBinding {
                rows: fewer,
                ..good
            },
            format!(
                "built over {} rows, the snapshot's pool has {}",
                f.rows.len(),
                fewer.len()
            ),
        ),
        (
            IndexBinding {
                metric: Metric::Dot,
                ..good
            },
            "built for metric cosine, the snapshot's metric is dot".into(),
        ),
        (
            IndexBinding {
                vectors: &wider,
                ..good
            },
            format!("built for dim {DIM}, the snapshot's dim is {}", DIM + 4),
        ),
        (
            IndexBinding {
                params: params(16, 60),
                ..good
            },
            "built for max_connections 8, options ask for 16".into(),
        ),
        (
            IndexBinding {
                params: params(8, 200),
                ..good
            },
            "built for ef_construction 60, options ask for 200".into(),
        ),
        (
            IndexBinding {
                vectors: &edited,
                ..good
            },
            format!(
                "its vector for posts.npy row {} (numpy index [{}]) differs from the snapshot's",
                f.rows[7] + 1,
                f.rows[7]
            ),
        ),
    ];
    for (binding, reason) in cases {
        let err = decode(&bytes, &binding).unwrap_err();
        assert!(
            matches!(err, StoredIndexError::Mismatch { .. }),
            "{reason}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("posts.index: {reason}"));
    }

    // `ef_search` is the caller's to choose: any value loads.
    let searched_wider = IndexBinding {
        params: HnswParams {
            ef_search: 500,
            ..f.params
        },
        ..good
    };
    assert_eq!(decode(&bytes, &searched_wider).unwrap().ef_search(), 500);
}

#[test]
fn another_format_version_is_refused() {
    let f = fixture(Metric::Dot);
    let err = decode(&encode(&f.index, FORMAT_VERSION + 1), &f.binding()).unwrap_err();
    assert!(
        matches!(err, StoredIndexError::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "posts.index: format version {}, this build reads version {FORMAT_VERSION}",
            FORMAT_VERSION + 1
        )
    );
}

#[test]
fn a_file_that_is_not_a_stored_index_has_bad_magic() {
    let f = fixture(Metric::Cosine);
    let mut bytes = f.bytes();
    bytes[0] = b'{';
    let err = decode(&bytes, &f.binding()).unwrap_err();
    assert!(matches!(err, StoredIndexError::BadMagic { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "posts.index: not a stored index (bad magic bytes)"
    );
    let err = decode(b"{\"dim\": 64}\n", &f.binding()).unwrap_err();
    assert!(matches!(err, StoredIndexError::BadMagic { .. }), "{err:?}");
}

#[test]
fn a_cut_file_is_reported_as_truncated_at_every_cut_point() {
    let f = fixture(Metric::Cosine);
    let bytes = f.bytes();
    let header_end = header_end(&bytes);
    let len = bytes.len();
    for cut in [
        0,
        3,
        8,
        15,
        16,
        header_end - DIGEST_LEN,
        header_end - 1,
        header_end,
        header_end + 70,
        len / 2,
        len - DIGEST_LEN - 1,
        len - DIGEST_LEN,
        len - 1,
    ] {
        let err = decode(&bytes[..cut], &f.binding()).unwrap_err();
        assert!(
            matches!(err, StoredIndexError::Truncated { .. }),
            "cut at {cut} of {len}: {err:?}"
        );
        assert!(err.to_string().starts_with("posts.index: truncated: "));
    }

    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 10]);
    let err = decode(&longer, &f.binding()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "posts.index: malformed: 10 bytes after the end the header describes ({len} bytes)"
        )
    );
}

#[test]
fn a_flipped_byte_anywhere_is_caught() {
    let f = fixture(Metric::Cosine);
    let bytes = f.bytes();
    let header_end = header_end(&bytes);
    let len = bytes.len();
    let positions = (0..header_end + 64)
        .chain((header_end + 64..len - 40).step_by(37))
        .chain(len - 40..len);
    let mut checked = 0;
    for at in positions {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x10;
        let err = decode(&corrupt, &f.binding()).unwrap_err();
        match at {
            0..8 => assert!(matches!(err, StoredIndexError::BadMagic { .. }), "{err:?}"),
            // The header's length: reading the wrong number of bytes as the header.
            12..16 => assert!(
                matches!(
                    err,
                    StoredIndexError::ChecksumMismatch { .. }
                        | StoredIndexError::Truncated { .. }
                        | StoredIndexError::Malformed { .. }
                ),
                "byte {at}: {err:?}"
            ),
            _ => {
                let part = if at < header_end { "header" } else { "body" };
                assert!(
                    matches!(err, StoredIndexError::ChecksumMismatch { part: p, .. } if p == part),
                    "byte {at}: {err:?}"
                );
                assert_eq!(
                    err.to_string(),
                    format!("posts.index: checksum mismatch in the {part}: the file is corrupt")
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 500, "{checked} positions");
}

/// A file whose checksums hold but whose graph is inconsistent is refused before any search
/// can touch it.
#[test]
fn a_structurally_invalid_body_with_valid_checksums_is_refused() {
    let f = fixture(Metric::Cosine);
    let bytes = f.bytes();
    let n = f.rows.len() as u32;
    let top = f.index.upper.len();
    let not_on_top = (0..n)
        .find(|p| f.index.upper[top - 1].members.binary_search(p).is_err())
        .unwrap();
    type Edit = Box<dyn Fn(&mut FlatHnswIndex)>;
    let cases: Vec<(Edit, String)> = vec![
        (
            Box::new(move |i| *i.base.links.last_mut().unwrap() = n),
            format!(
                "layer 0: node {} links to {n}, past the {n} positions",
                n - 1
            ),
        ),
        (
            Box::new(move |i| i.upper[0].adjacency.links[0] = n + 7),
            format!("layer 1: node 0 links to {}, past the {n} positions", n + 7),
        ),
        (
            Box::new(|i| {
                let o = &mut i.base.offsets;
                o[10] = o[11] + 1;
            }),
            "layer 0 offsets decrease at node 10".into(),
        ),
        (
            Box::new(|i| *i.base.offsets.last_mut().unwrap() -= 1),
            "layer 0 offsets end at".into(),
        ),
        (
            Box::new(|i| i.base.offsets[0] = 1),
            "layer 0 offsets start at 1, not 0".into(),
        ),
        (
            Box::new(|i| i.upper[0].members.swap(0, 1)),
            "layer 1 members are not sorted and unique".into(),
        ),
        (
            Box::new(|i| i.upper[0].members[1] = i.upper[0].members[0]),
            "layer 1 members are not sorted and unique".into(),
        ),
        (
            Box::new(move |i| *i.upper[0].members.last_mut().unwrap() = n),
            format!("layer 1 has member {n}, past the {n} positions"),
        ),
        (
            Box::new(|i| {
                i.upper[0].members.clear();
                i.upper[0].adjacency = Adjacency {
                    offsets: vec![0],
                    links: Vec::new(),
                };
            }),
            "layer 1 has no members".into(),
        ),
        (
            Box::new(move |i| i.entry = n),
            format!("entry point {n} is past the {n} positions"),
        ),
        (
            Box::new(move |i| i.entry = not_on_top),
            format!("entry point {not_on_top} is not on the top layer ({top})"),
        ),
        (
            // Row 0 is lines 0 and 1; float DIM is the first of its padding.
            Box::new(|i| i.vectors[1].0[DIM - LANES] = 0.5),
            "the padding of position 0 is not zero".into(),
        ),
    ];
    for (edit, reason) in cases {
        let mut broken = decode(&bytes, &f.binding()).unwrap();
        edit(&mut broken);
        let err = decode(&encode(&broken, FORMAT_VERSION), &f.binding()).unwrap_err();
        assert!(
            matches!(err, StoredIndexError::InvalidStructure { .. }),
            "{reason}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("posts.index: invalid structure: {reason}")),
            "{message}"
        );
    }

    // A body whose row list differs from the one the header was hashed for.
    let mut edited = bytes.clone();
    let rows_at = header_end(&bytes).next_multiple_of(ALIGN as usize);
    edited.copy_within(rows_at..rows_at + 4, rows_at + 4);
    reseal(&mut edited);
    let err = decode(&edited, &f.binding()).unwrap_err();
    assert!(matches!(err, StoredIndexError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("another row list"), "{err}");
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let f = fixture(Metric::Cosine);
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory where the file should go: the final rename fails.
    let path = dir.path().join("posts.index");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), "x").unwrap();
    let err = f.index.write_to(&path, POSTS_SHA).unwrap_err();
    assert!(matches!(err, StoredIndexError::Write { .. }), "{err:?}");
    assert!(err.to_string().starts_with("posts.index: cannot write: "));
    assert_eq!(file_names(dir.path()), ["posts.index"]);

    let missing = dir.path().join("no/such/dir/posts.index");
    let err = f.index.write_to(&missing, POSTS_SHA).unwrap_err();
    assert!(matches!(err, StoredIndexError::Write { .. }), "{err:?}");
    let err = FlatHnswIndex::read_from(&missing, &f.binding()).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

/// The header records the graph builder: keep the name in step with the locked version.
#[test]
fn the_recorded_builder_is_the_locked_hnsw_rs() {
    let lock =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"hnsw_rs\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .expect("hnsw_rs in Cargo.lock");
    assert_eq!(
        HNSW_RS_BUILDER,
        format!("hnsw_rs {}", version.trim_matches('"'))
    );
}
