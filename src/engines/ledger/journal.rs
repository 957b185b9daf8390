//! The ledger's local journal: every record is appended to a file in
//! `[usage] data_dir` within milliseconds of its request's answer, before it
//! is written to the store, so a killed process (`kill -9`) or a shutdown
//! while the store is down loses nothing: the next start replays the file.
//! There is no fsync: a killed process loses nothing the kernel already has.
//!
//! The journal is a series of segment files, `usage.journal.<n>`, appended
//! to one at a time. Records are numbered in order (their "seq"); the
//! writer commits them in the same order and publishes the last committed
//! seq. A segment is closed (a new one opened) when it has aged past the
//! rotation interval or is entirely committed, and deleted once all its
//! records are committed. Records that arrive while a batch commits go to
//! the active segment, which is never deleted, so none is truncated away.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::UsageRecord;
use super::line;

const PREFIX: &str = "usage.journal.";
/// A segment this large is closed even if young, so replay reads files of
/// bounded size.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;

pub struct Journal {
    dir: PathBuf,
    active: Segment,
    /// Closed segments, oldest first, each with the seq of its last record.
    closed: VecDeque<(u64, u64)>,
    /// The seq of the last record journaled (or replayed).
    last_seq: u64,
    rotate_after: Duration,
}

struct Segment {
    number: u64,
    file: File,
    bytes: u64,
    /// The seq of its last record; `None` while empty.
    last_seq: Option<u64>,
    opened: Instant,
}

/// What start-up found in the journal.
pub struct Replay {
    /// Records of an earlier run, oldest first; they take seqs 1..=len.
    pub records: Vec<UsageRecord>,
    /// Lines that did not parse (a line torn by a crash).
    pub torn: usize,
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) with a new active
    /// segment; the records of earlier segments are returned for replay.
    pub fn open(dir: &Path, rotate_after: Duration) -> io::Result<(Self, Replay)> {
        std::fs::create_dir_all(dir)?;
        let mut replay = Replay {
            records: Vec::new(),
            torn: 0,
        };
        let mut closed = VecDeque::new();
        let mut next = 0;
        for number in segment_numbers(dir)? {
            let path = segment_path(dir, number);
            let before = replay.records.len();
            read_segment(&path, &mut replay)?;
            if replay.records.len() == before {
                std::fs::remove_file(&path)?;
            } else {
                closed.push_back((number, replay.records.len() as u64));
            }
            next = number + 1;
        }
        let journal = Self {
            active: Segment::create(dir, next)?,
            dir: dir.to_owned(),
            closed,
            last_seq: replay.records.len() as u64,
            rotate_after,
        };
        Ok((journal, replay))
    }

    /// Appends encoded lines holding `count` records. Those records take the
    /// next seqs whether or not the write succeeds (they are still written to
    /// the store); after a failed write the segment is closed, so a line it
    /// left half written is the last of its file.
    pub fn append(&mut self, lines: &[u8], count: u64) -> io::Result<()> {
        self.last_seq += count;
        self.active.last_seq = Some(self.last_seq);
        match self.active.file.write_all(lines) {
            Ok(()) => {
                self.active.bytes += lines.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.rotate();
                Err(error)
            }
        }
    }

    /// Records journaled but not yet committed.
    pub fn held(&self, committed: u64) -> u64 {
        self.last_seq.saturating_sub(committed)
    }

    /// Closes the active segment when due and deletes the segments whose
    /// records are all committed (every seq up to `committed`).
    pub fn prune(&mut self, committed: u64) -> io::Result<()> {
        if let Some(last) = self.active.last_seq {
            let due = last <= committed
                || self.active.opened.elapsed() >= self.rotate_after
                || self.active.bytes >= MAX_SEGMENT_BYTES;
            if due {
                self.rotate()?;
            }
        }
        while let Some(&(number, last)) = self.closed.front() {
            if last > committed {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, number))?;
            self.closed.pop_front();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = Segment::create(&self.dir, self.active.number + 1)?;
        let old = std::mem::replace(&mut self.active, next);
        self.closed
            .push_back((old.number, old.last_seq.unwrap_or(self.last_seq)));
        Ok(())
    }
}

impl Segment {
    fn create(dir: &Path, number: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, number))?;
        Ok(Self {
            number,
            file,
            bytes: 0,
            last_seq: None,
            opened: Instant::now(),
        })
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number}"))
}

/// The numbers of the segment files in `dir`, ascending.
fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Adds a segment's records to `replay`; a line that does not parse (the
/// last one, cut by a crash) is counted and skipped.
fn read_segment(path: &Path, replay: &mut Replay) -> io::Result<()> {
    let bytes = std::fs::read(path)?;
    for text in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match line::decode(text) {
            Some(record) => replay.records.push(record),
            None => replay.torn += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("sluice-journal-{}", fastrand::u64(..)))
    }

    fn lines(ids: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for id in ids {
            let record = UsageRecord {
                id: (*id).into(),
                ..UsageRecord::default()
            };
            line::encode(&record, &mut out);
        }
        out
    }

    fn ids(replay: &Replay) -> Vec<&str> {
        replay.records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn uncommitted_records_are_replayed_in_order_and_a_torn_line_skipped() {
        let dir = temp_dir();
        let (mut journal, replay) = Journal::open(&dir, Duration::from_secs(60)).unwrap();
        assert!(replay.records.is_empty());
        journal.append(&lines(&["a", "b"]), 2).unwrap();
        journal.prune(0).unwrap();
        journal.append(&lines(&["c"]), 1).unwrap();
        let mut torn = lines(&["d"]);
        torn.truncate(torn.len() / 2);
        journal.append(&torn, 1).unwrap();
        drop(journal);

        let (journal, replay) = Journal::open(&dir, Duration::from_secs(60)).unwrap();
        assert_eq!(ids(&replay), ["a", "b", "c"]);
        assert_eq!(replay.torn, 1);
        assert_eq!(journal.held(0), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn committed_segments_are_deleted_but_not_records_that_arrived_meanwhile() {
        let dir = temp_dir();
        let (mut journal, _) = Journal::open(&dir, Duration::ZERO).unwrap();
        journal.append(&lines(&["a", "b"]), 2).unwrap();
        // The writer takes a and b; c arrives while their batch commits.
        journal.prune(0).unwrap();
        journal.append(&lines(&["c"]), 1).unwrap();
        journal.prune(2).unwrap();
        drop(journal);
        let (mut journal, replay) = Journal::open(&dir, Duration::ZERO).unwrap();
        assert_eq!(ids(&replay), ["c"]);

        // Once c is committed, nothing is left.
        journal.prune(1).unwrap();
        drop(journal);
        let (_, replay) = Journal::open(&dir, Duration::ZERO).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(
            segment_numbers(&dir).unwrap().len(),
            1,
            "only the active one"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
