//! Where log lines go: a runtime thread gathers its lines and writes them
//! to stderr in one `write` when it goes idle, as an nginx worker writes its
//! access log itself.
//!
//! A call's access line is formatted on its thread and appended to that
//! thread's pending bytes. The runtime calls [`flush_pending`] just before
//! the thread parks (every runtime `main` and `infra::workers` build
//! registers it), so the lines of everything a wake-up served leave in one
//! `write`, after the answers they describe. Nothing wakes another thread
//! per line: a thread of its own for the log cost a futex wake-up and a
//! context switch per call when traffic was light (`docs/performance.md`).
//! A thread that is busy for long still writes once it holds `FLUSH_BYTES`
//! or its oldest line is `FLUSH_AFTER` old. A thread that never parks (the
//! blocking pool, the journal) writes each line at once. Like nginx's, the
//! write blocks while stderr's reader is stalled; no line is dropped.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Pending bytes past which a thread writes without waiting to park.
const FLUSH_BYTES: usize = 64 * 1024;
/// Age of the oldest pending line past which the next line is written with it.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

thread_local! {
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending::direct()) };
}

/// One thread's lines not yet written.
struct Pending {
    bytes: Vec<u8>,
    /// When the oldest pending line was added.
    since: Option<Instant>,
    /// Lines wait for the thread to park: set by the first park, so only
    /// runtime threads hold lines back.
    gathering: bool,
    /// Where the bytes go: stderr (a test's capture in tests).
    out: fn(&[u8]),
}

impl Pending {
    const fn direct() -> Self {
        Self {
            bytes: Vec::new(),
            since: None,
            gathering: false,
            out: write_stderr,
        }
    }

    fn add(&mut self, line: &[u8]) {
        if !self.gathering {
            (self.out)(line);
            return;
        }
        self.bytes.extend_from_slice(line);
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.bytes.len() >= FLUSH_BYTES || since.elapsed() >= FLUSH_AFTER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.bytes.is_empty() {
            (self.out)(&self.bytes);
            self.bytes.clear();
        }
        self.since = None;
        if self.bytes.capacity() > FLUSH_BYTES {
            self.bytes = Vec::new();
        }
    }
}

/// A thread that ends writes what it holds.
impl Drop for Pending {
    fn drop(&mut self) {
        self.flush();
    }
}

fn write_stderr(bytes: &[u8]) {
    // Nowhere to report a failed write to stderr.
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Writes the calling thread's pending lines, and from now on holds its
/// lines until it parks again: the runtimes' `on_thread_park` hook.
pub fn flush_pending() {
    PENDING.with(|pending| {
        if let Ok(mut pending) = pending.try_borrow_mut() {
            pending.gathering = true;
            pending.flush();
        }
    });
}

/// Writes the calling thread's pending lines and stops holding them: for
/// the main thread at exit, whose thread-locals are not dropped.
pub fn flush_now() {
    PENDING.with(|pending| {
        if let Ok(mut pending) = pending.try_borrow_mut() {
            pending.gathering = false;
            pending.flush();
        }
    });
}

/// The writer the log formatter is given: each event's formatted line
/// arrives in one `write_all`.
#[derive(Clone, Copy, Default)]
pub struct Lines;

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        PENDING.with(|pending| match pending.try_borrow_mut() {
            Ok(mut pending) => pending.add(bytes),
            // A line logged while this thread writes its own: write it now.
            Err(_) => write_stderr(bytes),
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Lines {
    type Writer = Self;

    fn make_writer(&self) -> Self {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static WRITTEN: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// On a thread of its own, with its writes captured.
    fn on_a_thread(test: fn()) {
        std::thread::spawn(move || {
            PENDING.with(|pending| {
                pending.borrow_mut().out = |bytes| {
                    WRITTEN.with(|written| written.borrow_mut().push(bytes.to_vec()));
                };
            });
            test();
        })
        .join()
        .unwrap();
    }

    fn writes() -> Vec<Vec<u8>> {
        WRITTEN.with(|written| written.take())
    }

    #[test]
    fn lines_wait_for_the_park_once_the_thread_has_parked() {
        on_a_thread(|| {
            // Before the first park: each line at once.
            Lines.write_all(b"x\n").unwrap();
            assert_eq!(writes(), [b"x\n".to_vec()]);
            flush_pending();
            Lines.write_all(b"a line\n").unwrap();
            Lines.write_all(b"another\n").unwrap();
            assert!(writes().is_empty());
            // The park writes both in one go.
            flush_pending();
            assert_eq!(writes(), [b"a line\nanother\n".to_vec()]);
            // Past the size bound, without a park.
            Lines.write_all(&vec![b'y'; FLUSH_BYTES]).unwrap();
            assert_eq!(writes().len(), 1);
            // At exit, and each line at once after it.
            Lines.write_all(b"last\n").unwrap();
            flush_now();
            Lines.write_all(b"z\n").unwrap();
            assert_eq!(writes(), [b"last\n".to_vec(), b"z\n".to_vec()]);
        });
    }

    #[test]
    fn an_old_line_goes_out_with_the_next() {
        on_a_thread(|| {
            flush_pending();
            Lines.write_all(b"old\n").unwrap();
            PENDING.with(|pending| {
                pending.borrow_mut().since = Some(Instant::now() - FLUSH_AFTER);
            });
            Lines.write_all(b"new\n").unwrap();
            assert_eq!(writes(), [b"old\nnew\n".to_vec()]);
        });
    }

    #[test]
    fn a_thread_that_ends_writes_what_it_holds() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        static AT_EXIT: AtomicUsize = AtomicUsize::new(0);
        std::thread::spawn(|| {
            PENDING.with(|pending| {
                pending.borrow_mut().out = |bytes| {
                    AT_EXIT.fetch_add(bytes.len(), Relaxed);
                };
            });
            flush_pending();
            Lines.write_all(b"held\n").unwrap();
            assert_eq!(AT_EXIT.load(Relaxed), 0);
        })
        .join()
        .unwrap();
        assert_eq!(AT_EXIT.load(Relaxed), 5);
    }
}
