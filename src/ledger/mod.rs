//! The ledger: every model call, tool call and graph node of a run, kept as versioned records, and the cost
//! report built on them.
//!
#![doc = include_str!("../../docs/ledger.md")]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod report;

pub use report::{CostModel, Price, Report, ReportRow};

use crate::run::{Recorder, RunEvent};
use crate::{Error, Result};

/// The version of the [`LedgerRecord`] layout; it changes when a field changes meaning or is removed.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of a JSON Lines ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// [`SCHEMA_VERSION`] when the record was written.
    pub schema: u32,
    /// Position in the file, from 0, as written by one ledger.
    pub seq: u64,
    /// When the event was recorded, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The event.
    pub event: RunEvent,
}

/// A [`Recorder`] that appends every event to a JSON Lines file.
///
/// Recording never waits for the disk: events go to a writer thread of the ledger's own, which serializes
/// them and appends one line per event with one write each (a crash can tear at most the last line).
/// [`flush`](Self::flush) waits until everything recorded so far is written; dropping the ledger does too.
#[derive(Debug)]
pub struct JsonlLedger {
    path: PathBuf,
    seq: AtomicU64,
    writer: Option<Writer>,
}

#[derive(Debug)]
struct Writer {
    queue: std::sync::mpsc::Sender<Message>,
    thread: std::thread::JoinHandle<()>,
}

enum Message {
    Record(Box<LedgerRecord>),
    Flush(std::sync::mpsc::Sender<()>),
}

impl JsonlLedger {
    /// Opens (or creates) the file for appending and starts its writer thread.
    ///
    /// # Errors
    /// [`Error::Ledger`] if the file cannot be opened or the thread cannot start.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Ledger { path: path.clone(), source })?;
        let (queue, messages) = std::sync::mpsc::channel();
        let shown = path.clone();
        let thread = std::thread::Builder::new()
            .name("slm-ledger".into())
            .spawn(move || write_lines(file, &shown, messages))
            .map_err(|source| Error::Ledger { path: path.clone(), source })?;
        Ok(Self { path, seq: AtomicU64::new(0), writer: Some(Writer { queue, thread }) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until every event recorded so far is written to the file.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.writer.as_ref().is_some_and(|w| w.queue.send(Message::Flush(done)).is_ok()) {
            let _ = wait.recv();
        }
    }
}

fn write_lines(mut file: File, path: &Path, messages: std::sync::mpsc::Receiver<Message>) {
    for message in messages {
        match message {
            Message::Record(record) => {
                let mut line = match serde_json::to_string(&record) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!(error = %e, "ledger record cannot be serialized");
                        continue;
                    }
                };
                line.push('\n');
                if let Err(e) = file.write_all(line.as_bytes()) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot append to the ledger");
                }
            }
            Message::Flush(done) => {
                let _ = file.flush();
                let _ = done.send(());
            }
        }
    }
    let _ = file.flush();
}

impl Drop for JsonlLedger {
    fn drop(&mut self) {
        if let Some(Writer { queue, thread }) = self.writer.take() {
            drop(queue);
            let _ = thread.join();
        }
    }
}

impl Recorder for JsonlLedger {
    fn record(&self, event: RunEvent) {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let record =
            LedgerRecord { schema: SCHEMA_VERSION, seq: self.seq.fetch_add(1, Ordering::Relaxed), at_ms, event };
        if let Some(w) = self.writer.as_ref() {
            if w.queue.send(Message::Record(Box::new(record))).is_err() {
                tracing::warn!(path = %self.path.display(), "the ledger's writer thread has stopped");
            }
        }
    }
}

/// The kinds of [`RunEvent`] this version writes and reads.
const EVENT_KINDS: [&str; 7] = ["ModelCall", "ToolCall", "Node", "Redaction", "Shadow", "Promotion", "Evaluation"];

/// Reads a JSON Lines ledger. Returns the records and how many lines were skipped: a torn last line (a
/// process killed while writing it) is skipped with a warning, and an event of a kind this version does not
/// know (written by a newer one) is skipped; a bad line elsewhere is an error.
///
/// # Errors
/// [`Error::Ledger`] if the file cannot be read; [`Error::LedgerLine`] for a malformed line that is not the
/// last, or a record of a newer schema version.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<(Vec<LedgerRecord>, usize)> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| Error::Ledger { path: path.to_owned(), source })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|source| Error::Ledger { path: path.to_owned(), source })?;
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let mut records = Vec::with_capacity(lines.len());
    let mut skipped = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // The version first: a record of a newer schema is refused even where it is the last line.
        let value = serde_json::from_str::<serde_json::Value>(line);
        if let Some(version) = value.as_ref().ok().and_then(|v| v.get("schema")).and_then(serde_json::Value::as_u64) {
            if version > u64::from(SCHEMA_VERSION) {
                return Err(Error::LedgerLine {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: format!("schema version {version} is newer than {SCHEMA_VERSION}"),
                });
            }
        }
        // An event of a kind this version does not know (written by a newer one) is skipped: adding a kind,
        // like adding a field, does not change the schema version.
        if let Ok(kind) =
            value.as_ref().map(|v| v.get("event").and_then(|e| e.as_object()).and_then(|o| o.keys().next()))
        {
            if let Some(kind) = kind.filter(|k| !EVENT_KINDS.contains(&k.as_str())) {
                tracing::debug!(path = %path.display(), line = i + 1, kind = %kind, "skipping an event of an unknown kind");
                skipped += 1;
                continue;
            }
        }
        match value.and_then(serde_json::from_value::<LedgerRecord>) {
            Ok(r) => records.push(r),
            Err(e) if Some(i) == last => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "skipping a torn last ledger line");
                skipped += 1;
            }
            Err(e) => return Err(Error::LedgerLine { path: path.to_owned(), line: i + 1, reason: e.to_string() }),
        }
    }
    Ok((records, skipped))
}
