//! A write-ahead log of opaque records, with group commit.
//!
//! The log knows nothing of what it stores: a record is a byte payload that the caller encodes
//! (with postcard) and decodes again on replay. It depends on no other module of the crate.
//!
//! # Format
//!
//! One file, `DIR/events.wal` ([`FILE_NAME`]):
//!
//! ```text
//! magic    8 bytes  "FRWAL\0\0\x01" (the last byte is the format version)
//! record*  [u32 LE payload length][u32 LE crc32][payload]
//! ```
//!
//! The crc32 covers the four length bytes followed by the payload, so a damaged length is
//! caught as surely as a damaged payload. A payload holds at most [`MAX_PAYLOAD`] bytes:
//! [`Wal::append`] refuses bigger ones, and on replay a larger length counts as corruption
//! (a garbage length must not make recovery allocate or skip gigabytes).
//!
//! # Group commit
//!
//! One writer thread owns the file. [`Wal::append`] sends its payloads over a channel and
//! blocks until the writer answers. The writer takes one request, then drains every request
//! already queued, writes all their records with a single `write_all`, calls `sync_data` once
//! (unless [`WalOptions::sync`] is off) and only then answers them all. Callers that arrive
//! while a sync is running therefore share the next one: under load the number of syncs grows
//! with the number of batches, not of appends ([`Wal::stats`] shows both).
//!
//! If a write or a sync fails, every request of that batch gets the error and the log is
//! *poisoned*: later appends fail at once with [`WalError::Poisoned`]. After a failed write
//! the file's tail is unknown (part of the batch may be on disk, and after a failed fsync
//! Linux may even have dropped the dirty pages while marking them clean), so appending more
//! could put acknowledged records behind garbage that replay stops at. Reopening the log
//! recovers whatever reached the disk whole.
//!
//! # Recovery
//!
//! [`Wal::open`] reads the whole log and checks every record. At the first bad one (a torn
//! header, a torn payload, a length above the maximum, a crc mismatch) it truncates the file to
//! the end of the last good record, fsyncs it, logs a warning saying how many bytes were
//! dropped, and reports it in [`Recovered::truncated`]. Nothing after a bad record is kept:
//! once one length can't be trusted the records behind it can't be framed reliably, and a
//! crash only ever tears the tail, which is what this policy repairs. A file whose magic is
//! wrong is never touched ([`WalError::NotAWal`]); a file shorter than the magic that is a
//! prefix of it (a crash right after creation) is treated as empty and rewritten.
//!
//! # Compaction
//!
//! [`Wal::compact`] rewrites the log keeping the records a predicate accepts. It writes them
//! to `events.wal.tmp`, fsyncs that, renames it over `events.wal` and fsyncs the directory;
//! the rename is the commit point, so a crash leaves either the old log or the new one, never a
//! mix (a leftover `.tmp` is deleted by the next open). Appends wait while it runs and then go
//! to the new file.
//!
//! # Sequence numbers
//!
//! A record's sequence number is its position in the current file, from 0, replayed records
//! included, so `Recovered::records[seq]` is the record an [`AppendReceipt`] named. Compaction
//! renumbers: after it, the next append gets `seq == kept`.

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

/// The first bytes of every log file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"FRWAL\0\0\x01";
/// The largest payload a record may hold: 16 MiB.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Bytes before each payload: its length and its crc32.
pub const RECORD_HEADER: usize = 8;
/// The log's file name inside its directory.
pub const FILE_NAME: &str = "events.wal";
/// Where compaction writes the new log before renaming it over [`FILE_NAME`].
pub const TMP_FILE_NAME: &str = "events.wal.tmp";

/// The writer stops draining the queue into a batch once this many bytes are waiting, so a
/// flood of appends can't grow one write buffer without bound (a single bigger request still
/// goes through whole).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a feedrank write-ahead log (wrong magic)", path.display())]
    NotAWal { path: PathBuf },
    #[error("a write-ahead log record holds at most {MAX_PAYLOAD} bytes, got {len}")]
    TooLarge { len: usize },
    #[error("the write-ahead log is poisoned by an earlier write or sync failure; reopen it")]
    Poisoned,
    #[error("the write-ahead log's writer thread is gone")]
    Closed,
}

impl WalError {
    fn io(path: &Path, source: io::Error) -> WalError {
        WalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// fsync (`File::sync_data`) each batch before acknowledging it. Off, an acknowledged
    /// record survives a crash of the process but not of the machine.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions { sync: true }
    }
}

/// What [`Wal::open`] found in an existing log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Every good record, in file order (index = sequence number).
    pub records: Vec<Vec<u8>>,
    /// Set when a bad tail was cut off.
    pub truncated: Option<Truncation>,
}

/// A bad tail that [`Wal::open`] cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The file's new length: the end of the last good record (where the first bad one began).
    pub offset: u64,
    /// How many bytes were removed.
    pub dropped_bytes: u64,
    /// What was wrong with the first bad record.
    pub reason: String,
}

/// Where an append's records landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Sequence number of the first record (see the module docs).
    pub first_seq: u64,
    /// How many records were appended.
    pub count: usize,
}

/// What [`Wal::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    pub kept: usize,
    pub dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Counters of the log, for reporting group-commit efficiency (`appends / syncs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Records in the current file.
    pub records: u64,
    /// Bytes in the current file, magic included.
    pub bytes: u64,
    /// Append requests acknowledged since open.
    pub appends: u64,
    /// `sync_data` calls for appends since open (0 with sync off).
    pub syncs: u64,
}

/// State the writer thread shares with the handle.
#[derive(Default)]
struct Shared {
    records: AtomicU64,
    bytes: AtomicU64,
    appends: AtomicU64,
    syncs: AtomicU64,
    poisoned: AtomicBool,
}

type Reply<T> = mpsc::SyncSender<Result<T, WalError>>;

enum Request {
    Append {
        payloads: Vec<Vec<u8>>,
        reply: Reply<AppendReceipt>,
    },
    Compact {
        reply: Reply<CompactOffer>,
    },
}

/// The writer's side of a compaction, handed to the caller: the predicate runs on the caller's
/// thread (so it needs neither `Send` nor `'static`), while the writer waits for the verdicts
/// and does the file work. If the predicate panics the verdicts never come, and the writer
/// simply goes on with the old log.
struct CompactOffer {
    bytes: Arc<Vec<u8>>,
    records: Vec<Range<usize>>,
    verdicts: mpsc::SyncSender<Vec<bool>>,
    done: mpsc::Receiver<Result<CompactStats, WalError>>,
}

/// A write-ahead log: a handle to its writer thread. Share it by reference (it is `Sync`);
/// dropping it lets the writer finish the queued requests, then joins it.
pub struct Wal {
    path: PathBuf,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering its records; see the module docs.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let path = dir.join(FILE_NAME);
        // A compaction that crashed before its rename left garbage; the log itself is whole.
        let tmp = dir.join(TMP_FILE_NAME);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(WalError::io(&tmp, e)),
            _ => {}
        }
        let io = |e| WalError::io(&path, e);

        let (mut file, created) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io)?,
                false,
            ),
            Err(e) => return Err(io(e)),
        };

        let mut recovered = Recovered::default();
        let len;
        if created {
            file.write_all(&MAGIC).map_err(io)?;
            file.sync_data().map_err(io)?;
            // The new directory entry must be durable too, or a crash could lose the file.
            sync_dir(dir).map_err(|e| WalError::io(dir, e))?;
            len = MAGIC.len() as u64;
        } else {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io)?;
            if bytes.len() < MAGIC.len() {
                if bytes[..] != MAGIC[..bytes.len()] {
                    return Err(WalError::NotAWal { path });
                }
                // A crash between creating the file and syncing its magic: an empty log.
                file.set_len(0).map_err(io)?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                file.write_all(&MAGIC).map_err(io)?;
                file.sync_data().map_err(io)?;
                len = MAGIC.len() as u64;
            } else if bytes[..MAGIC.len()] != MAGIC {
                return Err(WalError::NotAWal { path });
            } else {
                let scan = scan(&bytes);
                recovered.records = scan
                    .records
                    .iter()
                    .map(|r| bytes[r.clone()].to_vec())
                    .collect();
                if let Some(reason) = scan.bad {
                    let truncation = Truncation {
                        offset: scan.good_end as u64,
                        dropped_bytes: (bytes.len() - scan.good_end) as u64,
                        reason,
                    };
                    file.set_len(truncation.offset).map_err(io)?;
                    // sync_all: the new length is metadata, and it must stick before any
                    // append lands behind it.
                    file.sync_all().map_err(io)?;
                    tracing::warn!(
                        path = %path.display(),
                        offset = truncation.offset,
                        dropped_bytes = truncation.dropped_bytes,
                        reason = %truncation.reason,
                        kept_records = recovered.records.len(),
                        "write-ahead log: cut off a bad tail"
                    );
                    recovered.truncated = Some(truncation);
                }
                len = scan.good_end as u64;
            }
            file.seek(SeekFrom::Start(len)).map_err(io)?;
        }

        let shared = Arc::new(Shared::default());
        let records = recovered.records.len() as u64;
        shared.records.store(records, Ordering::Relaxed);
        shared.bytes.store(len, Ordering::Relaxed);
        let writer = Writer {
            dir: dir.to_path_buf(),
            path: path.clone(),
            file,
            options,
            next_seq: records,
            len,
            buf: Vec::new(),
            shared: Arc::clone(&shared),
        };
        let (requests, inbox) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("feedrank-wal".into())
            .spawn(move || writer.run(inbox))
            .map_err(io)?;
        let wal = Wal {
            path,
            requests: Some(requests),
            writer: Some(writer),
            shared,
        };
        Ok((wal, recovered))
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `payloads` as consecutive records; returns once they are written and (with
    /// [`WalOptions::sync`]) on disk. Concurrent callers share syncs (group commit).
    pub fn append(&self, payloads: Vec<Vec<u8>>) -> Result<AppendReceipt, WalError> {
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(WalError::TooLarge { len: p.len() });
        }
        self.check_poisoned()?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Append { payloads, reply })?;
        answer.recv().map_err(|_| WalError::Closed)?
    }

    /// Rewrites the log keeping the records `keep` accepts (in order); appends wait meanwhile
    /// and then go to the new file. `keep` runs on the calling thread.
    pub fn compact(&self, mut keep: impl FnMut(&[u8]) -> bool) -> Result<CompactStats, WalError> {
        self.check_poisoned()?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Compact { reply })?;
        let offer = answer.recv().map_err(|_| WalError::Closed)??;
        let verdicts = offer
            .records
            .iter()
            .map(|r| keep(&offer.bytes[r.clone()]))
            .collect();
        offer
            .verdicts
            .send(verdicts)
            .map_err(|_| WalError::Closed)?;
        offer.done.recv().map_err(|_| WalError::Closed)?
    }

    /// Every record in the log file now, in order: each append that has returned is there.
    /// For handing the log over to a successor while appends are held back.
    pub fn records(&self) -> Result<Vec<Vec<u8>>, WalError> {
        self.check_poisoned()?;
        let bytes = fs::read(&self.path).map_err(|e| WalError::io(&self.path, e))?;
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(WalError::NotAWal {
                path: self.path.clone(),
            });
        }
        let scan = scan(&bytes);
        Ok(scan
            .records
            .iter()
            .map(|r| bytes[r.clone()].to_vec())
            .collect())
    }

    /// The log's counters.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            records: s.records.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            appends: s.appends.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
        }
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn send(&self, request: Request) -> Result<(), WalError> {
        let requests = self.requests.as_ref().ok_or(WalError::Closed)?;
        requests.send(request).map_err(|_| WalError::Closed)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queued requests are answered.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            // A panic on the writer thread has already failed its callers (Closed).
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The writer thread's state: it alone touches the file.
struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    options: WalOptions,
    next_seq: u64,
    len: u64,
    /// The batch's encoded records, reused between batches.
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

struct Pending {
    reply: Reply<AppendReceipt>,
    receipt: AppendReceipt,
}

impl Writer {
    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        // A compaction found while draining waits until the batch before it is committed.
        let mut next = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match inbox.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                },
            };
            match request {
                Request::Compact { reply } => self.compact(reply),
                Request::Append { payloads, reply } => {
                    let mut batch = Vec::new();
                    self.stage(payloads, reply, &mut batch);
                    while self.buf.len() < MAX_BATCH_BYTES {
                        match inbox.try_recv() {
                            Ok(Request::Append { payloads, reply }) => {
                                self.stage(payloads, reply, &mut batch)
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                }
            }
        }
    }

    /// Encodes one request's records into the batch buffer and numbers them.
    fn stage(
        &mut self,
        payloads: Vec<Vec<u8>>,
        reply: Reply<AppendReceipt>,
        batch: &mut Vec<Pending>,
    ) {
        let receipt = AppendReceipt {
            first_seq: self.next_seq,
            count: payloads.len(),
        };
        for payload in &payloads {
            encode_record(&mut self.buf, payload);
        }
        self.next_seq += payloads.len() as u64;
        batch.push(Pending { reply, receipt });
    }

    /// Writes and syncs the batch, then answers every request in it.
    fn commit(&mut self, batch: Vec<Pending>) {
        let result = if self.shared.poisoned.load(Ordering::Acquire) {
            Err(None)
        } else {
            self.write_batch().map_err(Some)
        };
        self.buf.clear();
        if self.buf.capacity() > MAX_BATCH_BYTES {
            self.buf.shrink_to(MAX_BATCH_BYTES);
        }
        match result {
            Ok(()) => {
                let records: usize = batch.iter().map(|p| p.receipt.count).sum();
                self.shared
                    .records
                    .fetch_add(records as u64, Ordering::Relaxed);
                self.shared.bytes.store(self.len, Ordering::Relaxed);
                self.shared
                    .appends
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for p in batch {
                    // A caller that went away (it can't: append blocks) needs no answer.
                    let _ = p.reply.send(Ok(p.receipt));
                }
            }
            Err(error) => {
                self.shared.poisoned.store(true, Ordering::Release);
                for p in batch {
                    let answer = match &error {
                        // io::Error isn't Clone: each caller gets its own copy of the failure.
                        Some(e) => {
                            WalError::io(&self.path, io::Error::new(e.kind(), e.to_string()))
                        }
                        None => WalError::Poisoned,
                    };
                    let _ = p.reply.send(Err(answer));
                }
            }
        }
    }

    fn write_batch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(()); // only empty appends: nothing to make durable
        }
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        if self.options.sync {
            self.file.sync_data()?;
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn compact(&mut self, reply: Reply<CompactOffer>) {
        if self.shared.poisoned.load(Ordering::Acquire) {
            let _ = reply.send(Err(WalError::Poisoned));
            return;
        }
        // Everything appended so far was written with write_all, so the file holds it all.
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = reply.send(Err(WalError::io(&self.path, e)));
                return;
            }
        };
        let scan = scan(&bytes);
        if let Some(reason) = scan.bad {
            // Our own file can't be bad unless something else wrote to it: don't build on it.
            let e = io::Error::new(io::ErrorKind::InvalidData, reason);
            let _ = reply.send(Err(WalError::io(&self.path, e)));
            return;
        }
        let bytes = Arc::new(bytes);
        let (verdicts_tx, verdicts) = mpsc::sync_channel(1);
        let (done, done_rx) = mpsc::sync_channel(1);
        let offer = CompactOffer {
            bytes: Arc::clone(&bytes),
            records: scan.records.clone(),
            verdicts: verdicts_tx,
            done: done_rx,
        };
        if reply.send(Ok(offer)).is_err() {
            return;
        }
        let Ok(verdicts) = verdicts.recv() else {
            return; // the predicate panicked: the old log stays as it was
        };
        let result = self.rewrite(&bytes, &scan.records, &verdicts);
        let _ = done.send(result);
    }

    fn rewrite(
        &mut self,
        bytes: &[u8],
        records: &[Range<usize>],
        verdicts: &[bool],
    ) -> Result<CompactStats, WalError> {
        let tmp = self.dir.join(TMP_FILE_NAME);
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&MAGIC);
        let mut kept = 0;
        for (record, &keep) in records.iter().zip(verdicts) {
            if keep {
                // The header sits right before the payload: copy the record as it is.
                out.extend_from_slice(&bytes[record.start - RECORD_HEADER..record.end]);
                kept += 1;
            }
        }
        let write_tmp = || -> io::Result<File> {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&out)?;
            file.sync_all()?;
            Ok(file)
        };
        let file = match write_tmp() {
            Ok(file) => file,
            Err(e) => {
                // Before the rename the old log is untouched and still ours to append to.
                let _ = fs::remove_file(&tmp);
                return Err(WalError::io(&tmp, e));
            }
        };
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(WalError::io(&self.path, e));
        }
        // The open handle now refers to the renamed file, positioned at its end.
        self.file = file;
        if let Err(e) = sync_dir(&self.dir) {
            // Whether the rename survives a crash is unknown, so appends to the new file might
            // vanish with it: refuse them.
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(WalError::io(&self.dir, e));
        }
        let stats = CompactStats {
            kept,
            dropped: records.len() - kept,
            bytes_before: bytes.len() as u64,
            bytes_after: out.len() as u64,
        };
        self.len = stats.bytes_after;
        self.next_seq = kept as u64;
        self.shared.records.store(kept as u64, Ordering::Relaxed);
        self.shared.bytes.store(self.len, Ordering::Relaxed);
        Ok(stats)
    }
}

/// Appends one framed record to `buf`.
fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&checksum(len, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    hasher.finalize()
}

/// The records of a whole log file (magic included, already checked).
struct Scan {
    /// Byte ranges of the good records' payloads.
    records: Vec<Range<usize>>,
    /// End of the last good record.
    good_end: usize,
    /// Why the record at `good_end` is bad, if the file goes on past it.
    bad: Option<String>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    let bad = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEADER {
            break Some(format!(
                "torn record header ({} of {RECORD_HEADER} bytes)",
                rest.len()
            ));
        }
        let len_bytes: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_PAYLOAD {
            break Some(format!(
                "record length {len} exceeds the {MAX_PAYLOAD}-byte maximum"
            ));
        }
        let available = rest.len() - RECORD_HEADER;
        if available < len {
            break Some(format!("torn payload ({available} of {len} bytes)"));
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        if checksum(len_bytes, payload) != crc {
            break Some(format!("checksum mismatch in a {len}-byte record"));
        }
        records.push(at + RECORD_HEADER..at + RECORD_HEADER + len);
        at += RECORD_HEADER + len;
    };
    Scan {
        records,
        good_end: at,
        bad,
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// std can't open a directory for syncing off Unix; there the directory sync is skipped.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
