use std::collections::HashMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn open(dir: &Path) -> (Wal, Recovered) {
    Wal::open(dir, WalOptions::default()).expect("open the log")
}

fn open_unsynced(dir: &Path) -> (Wal, Recovered) {
    Wal::open(dir, WalOptions { sync: false }).expect("open the log")
}

/// Payloads of varied sizes (including empty), each distinct.
fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| (0..(i * 7) % 23).map(|b| (b + i * 31) as u8).collect())
        .collect()
}

/// File offset where each record starts, plus the file's length as a last entry.
fn offsets(payloads: &[Vec<u8>]) -> Vec<u64> {
    let mut at = MAGIC.len() as u64;
    let mut out = vec![at];
    for p in payloads {
        at += (RECORD_HEADER + p.len()) as u64;
        out.push(at);
    }
    out
}

/// A log in a fresh directory holding `records`, one append each; returns the file's path.
fn write_log(dir: &Path, records: &[Vec<u8>]) -> std::path::PathBuf {
    let (wal, recovered) = open_unsynced(dir);
    assert!(recovered.records.is_empty());
    for r in records {
        wal.append(vec![r.clone()]).unwrap();
    }
    let path = wal.path().to_path_buf();
    drop(wal);
    path
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

#[test]
fn concurrent_appends_round_trip_with_group_commit() {
    const THREADS: u8 = 8;
    const APPENDS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    // A payload names its thread, its append and its place in the append.
    let payload = |t: u8, i: u32, j: usize| {
        let mut p = vec![t];
        p.extend_from_slice(&i.to_le_bytes());
        p.push(j as u8);
        p.resize(6 + (i as usize % 13), 0xee);
        p
    };
    let receipts: Vec<Vec<(AppendReceipt, Vec<Vec<u8>>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..APPENDS)
                        .map(|i| {
                            let batch: Vec<_> =
                                (0..1 + i as usize % 3).map(|j| payload(t, i, j)).collect();
                            (wal.append(batch.clone()).unwrap(), batch)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stats = wal.stats();
    let total: usize = receipts.iter().flatten().map(|(r, _)| r.count).sum();
    assert_eq!(stats.appends, u64::from(THREADS) * u64::from(APPENDS));
    assert_eq!(stats.records, total as u64);
    assert!(stats.syncs >= 1);
    assert!(
        stats.syncs < stats.appends,
        "no group commit: {} syncs for {} appends",
        stats.syncs,
        stats.appends
    );
    drop(wal);

    let (wal, recovered) = open(dir.path());
    assert_eq!(recovered.truncated, None);
    assert_eq!(recovered.records.len(), total);
    assert_eq!(wal.stats().records, total as u64);
    assert_eq!(wal.stats().bytes, fs::metadata(wal.path()).unwrap().len());
    // Every acknowledged payload is where its receipt says...
    for (receipt, batch) in receipts.iter().flatten() {
        assert_eq!(receipt.count, batch.len());
        let at = receipt.first_seq as usize;
        assert_eq!(&recovered.records[at..at + batch.len()], &batch[..]);
    }
    // ...exactly once, and each thread's records come in the order it appended them.
    let mut seen = HashMap::new();
    let mut last = vec![None; THREADS as usize];
    for (seq, r) in recovered.records.iter().enumerate() {
        assert!(seen.insert(r.clone(), seq).is_none(), "record {seq} twice");
        let (t, i, j) = (
            r[0] as usize,
            u32::from_le_bytes(r[1..5].try_into().unwrap()),
            r[5],
        );
        assert!(last[t] < Some((i, j)), "thread {t} out of order at {seq}");
        last[t] = Some((i, j));
    }
}

#[test]
fn torn_tail_is_cut_at_the_last_whole_record() {
    let records = payloads(5);
    let ends = offsets(&records);
    let last_len = ends[5] - ends[4];
    // Every cut inside the last record: its payload, then its header; then the whole record.
    for cut in 1..=last_len {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &records);
        let full = fs::metadata(&path).unwrap().len();
        assert_eq!(full, ends[5]);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - cut)
            .unwrap();

        let (wal, recovered) = open(dir.path());
        assert_eq!(recovered.records, records[..4], "cut {cut}");
        if cut == last_len {
            assert_eq!(
                recovered.truncated, None,
                "a clean cut at a record boundary"
            );
        } else {
            let t = recovered.truncated.expect("a truncation");
            assert_eq!(t.offset, ends[4], "cut {cut}");
            assert_eq!(t.dropped_bytes, last_len - cut, "cut {cut}");
            let torn = if last_len - cut < RECORD_HEADER as u64 {
                "torn record header"
            } else {
                "torn payload"
            };
            assert!(t.reason.contains(torn), "cut {cut}: {}", t.reason);
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), ends[4]);

        let receipt = wal.append(vec![b"after".to_vec(), Vec::new()]).unwrap();
        assert_eq!(
            receipt,
            AppendReceipt {
                first_seq: 4,
                count: 2
            }
        );
        drop(wal);
        let (_wal, recovered) = open(dir.path());
        assert_eq!(recovered.truncated, None);
        let mut expected = records[..4].to_vec();
        expected.extend([b"after".to_vec(), Vec::new()]);
        assert_eq!(recovered.records, expected);
    }
}

#[test]
fn corrupt_record_drops_it_and_everything_after() {
    let records = payloads(6);
    let at = offsets(&records);
    let bad = 3;
    assert!(!records[bad].is_empty());
    // (byte to flip, what the reason should say)
    let cases = [
        (at[bad] + RECORD_HEADER as u64, "checksum"), // first payload byte
        (at[bad + 1] - 1, "checksum"),                // last payload byte
        (at[bad] + 4, "checksum"),                    // the crc itself
        (at[bad] + 3, "exceeds"),                     // length's high byte: far too long
        (at[bad], ""),                                // length's low byte: mismatch or torn
    ];
    for (byte, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &records);
        let full = fs::metadata(&path).unwrap().len();
        flip_byte(&path, byte);

        let (_wal, recovered) = open(dir.path());
        assert_eq!(recovered.records, records[..bad], "byte {byte}");
        let t = recovered.truncated.expect("a truncation");
        assert_eq!(t.offset, at[bad], "byte {byte}");
        assert_eq!(t.dropped_bytes, full - at[bad]);
        assert!(t.reason.contains(reason), "byte {byte}: {}", t.reason);
        assert_eq!(fs::metadata(&path).unwrap().len(), at[bad]);
    }
}

#[test]
fn wrong_magic_is_refused_and_left_alone() {
    for contents in [
        &b"NOTAWAL!\x00\x00\x00\x00"[..],
        b"FRWAL\0\0\x02",
        b"XY",
        b"FRWAX",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, contents).unwrap();
        match Wal::open(dir.path(), WalOptions::default()) {
            Err(WalError::NotAWal { path: p }) => assert_eq!(p, path),
            other => panic!("expected NotAWal for {contents:?}, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), contents);
    }
}

#[test]
fn empty_or_partial_magic_file_is_an_empty_log() {
    for len in 0..MAGIC.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, &MAGIC[..len]).unwrap();
        let (wal, recovered) = open(dir.path());
        assert_eq!(recovered, Recovered::default(), "{len} magic bytes");
        assert_eq!(fs::read(&path).unwrap(), MAGIC);
        assert_eq!(wal.append(vec![b"x".to_vec()]).unwrap().first_seq, 0);
        drop(wal);
        assert_eq!(open(dir.path()).1.records, [b"x".to_vec()]);
    }
}

#[test]
fn new_log_is_created_with_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let (wal, recovered) = open(&nested);
    assert_eq!(recovered, Recovered::default());
    assert_eq!(wal.path(), nested.join(FILE_NAME));
    assert_eq!(fs::read(wal.path()).unwrap(), MAGIC);
    assert_eq!(
        wal.stats(),
        WalStats {
            records: 0,
            bytes: MAGIC.len() as u64,
            appends: 0,
            syncs: 0
        }
    );
    // An empty append is acknowledged without touching the file.
    assert_eq!(
        wal.append(Vec::new()).unwrap(),
        AppendReceipt {
            first_seq: 0,
            count: 0
        }
    );
    assert_eq!(wal.stats().syncs, 0);
}

#[test]
fn compact_keeps_what_the_predicate_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    let records: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1 + i as usize]).collect();
    wal.append(records.clone()).unwrap();
    let before = wal.stats().bytes;

    let mut seen = Vec::new();
    let stats = wal
        .compact(|r| {
            seen.push(r.to_vec());
            r[0] % 2 == 0
        })
        .unwrap();
    assert_eq!(seen, records, "the predicate sees every record in order");
    let kept: Vec<Vec<u8>> = records.iter().filter(|r| r[0] % 2 == 0).cloned().collect();
    assert_eq!(
        stats,
        CompactStats {
            kept: 5,
            dropped: 5,
            bytes_before: before,
            bytes_after: offsets(&kept)[5],
        }
    );
    assert_eq!(wal.stats().records, 5);
    assert_eq!(wal.stats().bytes, stats.bytes_after);
    assert!(!dir.path().join(TMP_FILE_NAME).exists());

    // Appends continue in the new file, numbered after the kept records.
    let receipt = wal.append(vec![b"new".to_vec()]).unwrap();
    assert_eq!(
        receipt,
        AppendReceipt {
            first_seq: 5,
            count: 1
        }
    );
    drop(wal);
    let (_wal, recovered) = open(dir.path());
    let mut expected = kept;
    expected.push(b"new".to_vec());
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.truncated, None);
}

#[test]
fn compact_with_a_panicking_predicate_leaves_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path());
    wal.append(payloads(4)).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wal.compact(|_| panic!("predicate fails"))
    }));
    assert!(panicked.is_err());
    assert_eq!(wal.append(vec![b"more".to_vec()]).unwrap().first_seq, 4);
    drop(wal);
    let mut expected = payloads(4);
    expected.push(b"more".to_vec());
    assert_eq!(open(dir.path()).1.records, expected);
}

#[test]
fn stale_compaction_file_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &payloads(3));
    fs::write(dir.path().join(TMP_FILE_NAME), b"half a compaction").unwrap();
    let (_wal, recovered) = open(dir.path());
    assert_eq!(recovered.records, payloads(3));
    assert!(!dir.path().join(TMP_FILE_NAME).exists());
}

#[test]
fn unsynced_appends_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_unsynced(dir.path());
    let records = payloads(20);
    for chunk in records.chunks(3) {
        wal.append(chunk.to_vec()).unwrap();
    }
    assert_eq!(wal.stats().syncs, 0);
    assert_eq!(wal.stats().appends, 7);
    drop(wal);
    let (_wal, recovered) = open_unsynced(dir.path());
    assert_eq!(recovered.records, records);
}

#[test]
fn too_large_payload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_unsynced(dir.path());
    let err = wal
        .append(vec![b"ok".to_vec(), vec![0; MAX_PAYLOAD + 1]])
        .unwrap_err();
    assert!(matches!(err, WalError::TooLarge { len } if len == MAX_PAYLOAD + 1));
    // Nothing of the refused append was written, and the log still works.
    assert_eq!(wal.stats().records, 0);
    let biggest = vec![7; MAX_PAYLOAD];
    assert_eq!(wal.append(vec![biggest.clone()]).unwrap().count, 1);
    drop(wal);
    assert_eq!(open_unsynced(dir.path()).1.records, [biggest]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cutting the file anywhere recovers exactly the records that end at or before the cut.
    #[test]
    fn any_cut_recovers_the_longest_whole_prefix(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &records);
        let ends = offsets(&records);
        let full = *ends.last().unwrap();
        let cut = cut.index(full as usize + 1) as u64;
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();

        let (_wal, recovered) = open_unsynced(dir.path());
        let whole = ends[1..].iter().take_while(|&&end| end <= cut).count();
        prop_assert_eq!(&recovered.records[..], &records[..whole]);
        let boundary = cut < MAGIC.len() as u64 || ends.contains(&cut);
        prop_assert_eq!(recovered.truncated.is_none(), boundary);
        if let Some(t) = recovered.truncated {
            prop_assert_eq!(t.offset, ends[whole]);
            prop_assert_eq!(t.dropped_bytes, cut - ends[whole]);
        }
    }
}
