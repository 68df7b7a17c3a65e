//! The `--json-out` sink: one `sensor.v1.Event` per line in its proto3 JSON mapping, alerts as
//! `{"kind":"alert","alert":{...}}`, to stdout (`-`) or a file (appended to).
//!
//! It never stops or stalls the pipeline. The pipeline encodes a line and queues it (bounded by
//! [`MAX_QUEUED_BYTES`]), and hands the writer thread what it queued in batches: at the end of a
//! turn once the oldest queued line is [`HAND_OFF_AFTER`] old or [`HAND_OFF_BYTES`] are queued,
//! and at the deadline [`JsonOut::due`] names (so a line waits at most that long). The writer
//! writes it, in batches. What does not fit (a reader slower than the agent) and what cannot
//! be written (a full disk, a reader that went away: EPIPE) is dropped and counted
//! ([`JsonOutStats`], in `GetHealth` and the metrics), and the first failure of an episode and
//! its end are logged. Lines stay whole: when a write stops inside a line, the rest of that
//! line is written first once writing works again (space returned), and the lines behind it
//! are dropped meanwhile. Alerts are spooled and delivered over gRPC and OTLP whatever happens
//! here.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use sensor_proto::{self as pb, Alert, Event};

/// Bytes of encoded lines the writer may have waiting: beyond, new lines are dropped.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Most bytes the writer hands the kernel in one write.
const BATCH_BYTES: usize = 256 << 10;
/// Queued lines go to the writer once the oldest is this old...
pub const HAND_OFF_AFTER: Duration = Duration::from_millis(5);
/// ... or this many bytes are queued.
const HAND_OFF_BYTES: usize = 64 << 10;
/// How often a failing writer retries the rest of a line cut by a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// What the sink did, shared by the pipeline, the writer and the health reports.
#[derive(Default)]
pub struct JsonOutStats {
    /// `stdout` or the file's path.
    target: String,
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_write_failed: AtomicU64,
    write_errors: AtomicU64,
    failing: AtomicBool,
    queued_bytes: AtomicUsize,
    last_error: Mutex<String>,
}

/// The JSON lines sink of a running agent.
pub struct JsonOut {
    tx: Option<mpsc::Sender<Lines>>,
    stats: Arc<JsonOutStats>,
    writer: Option<thread::JoinHandle<()>>,
    /// Lines not yet handed to the writer. Waking the writer for each line cost the agent a
    /// context switch per event (under an exec storm it fell behind the ring); once per turn
    /// was still a sixth of its CPU under an exec storm (`perf record`: futex wakeups).
    pending: Mutex<Pending>,
}

/// Encoded lines waiting for the writer, and when the oldest was queued.
#[derive(Default)]
struct Pending {
    lines: Lines,
    since: Option<Instant>,
}

/// Whole encoded lines and how many there are (counted as they are queued, so that the
/// writer does not scan for newlines unless a write fails inside them).
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    count: u64,
}

impl Pending {
    /// When the lines must reach the writer: [`HAND_OFF_AFTER`] after the oldest.
    fn due(&self) -> Option<Instant> {
        self.since.map(|at| at + HAND_OFF_AFTER)
    }
}

impl JsonOut {
    /// Opens `target` (`-` for stdout) and starts the writer. Fails only when the file cannot
    /// be opened.
    pub fn open(target: &str) -> Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)
                    .with_context(|| format!("opening --json-out {target}"))?,
            )
        };
        let stats = Arc::new(JsonOutStats {
            target: display(target).to_string(),
            ..Default::default()
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            out,
            stats: stats.clone(),
            cut: Vec::new(),
            reader_gone: false,
            episode_dropped: 0,
        };
        let writer = thread::Builder::new()
            .name("json-out".into())
            .spawn(move || writer.run(rx))
            .context("starting the --json-out writer thread")?;
        Ok(Self {
            tx: Some(tx),
            stats,
            writer: Some(writer),
            pending: Mutex::new(Pending::default()),
        })
    }

    /// Where lines go, as the ready line says it.
    pub fn target(&self) -> &str {
        &self.stats.target
    }

    /// The sink's figures, for health reports while the pipeline owns the sink.
    pub fn stats(&self) -> Arc<JsonOutStats> {
        self.stats.clone()
    }

    pub fn event(&self, event: &Event) {
        self.queue(event);
    }

    /// An alert, told apart from events by `kind`, with the alert in its own JSON mapping.
    pub fn alert(&self, alert: &Alert) {
        self.queue(&serde_json::json!({ "kind": "alert", "alert": alert }));
    }

    fn queue(&self, value: &impl serde::Serialize) {
        let mut guard = self.pending.lock().unwrap();
        let Pending { lines, since } = &mut *guard;
        let pending = &mut lines.bytes;
        let start = pending.len();
        if let Err(e) = serde_json::to_writer(&mut *pending, value) {
            // Not reachable with proto types; counted rather than silently skipped.
            pending.truncate(start);
            self.stats.error(&format!("encoding a line: {e}"));
            self.stats
                .dropped_write_failed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.push(b'\n');
        let len = pending.len() - start;
        let queued = self.stats.queued_bytes.load(Ordering::Relaxed);
        if queued + len > MAX_QUEUED_BYTES {
            pending.truncate(start);
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        lines.count += 1;
        since.get_or_insert_with(Instant::now);
    }

    /// When the queued lines must reach the writer ([`JsonOut::flush_due`]): `None` when
    /// nothing is queued.
    pub fn due(&self) -> Option<Instant> {
        self.pending.lock().unwrap().due()
    }

    /// Hands the queued lines to the writer if the oldest is [`HAND_OFF_AFTER`] old or
    /// [`HAND_OFF_BYTES`] are queued.
    pub fn flush_due(&self) {
        let ready = {
            let pending = self.pending.lock().unwrap();
            pending.lines.bytes.len() >= HAND_OFF_BYTES
                || pending.due().is_some_and(|due| due <= Instant::now())
        };
        if ready {
            self.flush();
        }
    }

    /// Hands the lines queued since the last call to the writer.
    pub fn flush(&self) {
        let lines = {
            let mut pending = self.pending.lock().unwrap();
            pending.since = None;
            if pending.lines.count == 0 {
                return;
            }
            let capacity = pending.lines.bytes.len();
            std::mem::replace(
                &mut pending.lines,
                Lines {
                    bytes: Vec::with_capacity(capacity),
                    count: 0,
                },
            )
        };
        let unsent = match &self.tx {
            Some(tx) => tx.send(lines).err().map(|e| e.0),
            None => Some(lines),
        };
        if let Some(lines) = unsent {
            (self.stats.queued_bytes).fetch_sub(lines.bytes.len(), Ordering::Relaxed);
            (self.stats.dropped_write_failed).fetch_add(lines.count, Ordering::Relaxed);
        }
    }

    /// Writes what is queued, waiting at most `within` (a reader that stopped reading must not
    /// hold the agent's exit).
    pub fn close(&mut self, within: Duration) {
        self.flush();
        drop(self.tx.take());
        let Some(writer) = self.writer.take() else {
            return;
        };
        let deadline = Instant::now() + within;
        while !writer.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if writer.is_finished() {
            let _ = writer.join();
        } else {
            log::warn!(
                "--json-out {}: {} bytes not written at exit (the reader is not reading)",
                self.target(),
                self.stats.queued_bytes.load(Ordering::Relaxed)
            );
        }
    }
}

impl Drop for JsonOut {
    fn drop(&mut self) {
        self.close(Duration::from_secs(2));
    }
}

fn display(target: &str) -> &str {
    if target == "-" { "stdout" } else { target }
}

impl JsonOutStats {
    /// The sink's figures for `GetHealth`.
    pub fn health(&self) -> pb::JsonOutHealth {
        let s = self;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        pb::JsonOutHealth {
            target: s.target.clone(),
            written: n(&s.written),
            dropped_queue_full: n(&s.dropped_queue_full),
            dropped_write_failed: n(&s.dropped_write_failed),
            write_errors: n(&s.write_errors),
            last_error: s.last_error.lock().unwrap().clone(),
            failing: s.failing.load(Ordering::Relaxed),
            queued_bytes: s.queued_bytes.load(Ordering::Relaxed) as u64,
        }
    }

    fn error(&self, message: &str) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = message.to_string();
    }
}

/// The writer thread's state.
struct Writer {
    out: Box<dyn Write + Send>,
    stats: Arc<JsonOutStats>,
    /// The rest of a line a failed write stopped inside: written before anything else.
    cut: Vec<u8>,
    /// stdout's reader closed its end (EPIPE): a pipe never gets a reader back.
    reader_gone: bool,
    /// Lines dropped in the current failure episode, for the recovery message.
    episode_dropped: u64,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Lines>) {
        let mut batch = Lines::default();
        loop {
            let first = match rx.recv_timeout(RETRY) {
                Ok(lines) => lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !self.cut.is_empty() {
                        self.finish_cut();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            // The usual hand-off is written as it came; only a backlog is gathered (copied)
            // into batches of up to BATCH_BYTES.
            let Ok(second) = rx.try_recv() else {
                self.take(&first);
                continue;
            };
            batch.bytes.clear();
            batch.count = 0;
            let mut next = Some(second);
            batch.append(first);
            while let Some(lines) = next.take() {
                batch.append(lines);
                if batch.bytes.len() < BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            self.take(&batch);
        }
    }

    /// Writes lines handed over by the pipeline, which no longer counts them as queued.
    fn take(&mut self, lines: &Lines) {
        (self.stats.queued_bytes).fetch_sub(lines.bytes.len(), Ordering::Relaxed);
        self.write(&lines.bytes, lines.count);
    }

    /// Writes `lines` whole lines, or drops and counts what cannot be written.
    fn write(&mut self, batch: &[u8], lines: u64) {
        if self.reader_gone || (!self.cut.is_empty() && !self.finish_cut()) {
            self.drop_lines(lines);
            return;
        }
        let mut done = 0;
        let result = loop {
            if done == batch.len() {
                break Ok(());
            }
            match self.out.write(&batch[done..]) {
                Ok(0) => break Err(std::io::Error::from(ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result.and_then(|()| self.out.flush()) {
            Ok(()) => {
                self.stats.written.fetch_add(lines, Ordering::Relaxed);
                self.recovered();
            }
            Err(e) => {
                let written = count_lines(&batch[..done]);
                self.stats.written.fetch_add(written, Ordering::Relaxed);
                // The line the failure stopped inside is finished later; the rest is dropped.
                let cut_end = batch[done..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(done, |i| done + i + 1);
                let starts_line = done == 0 || batch[done - 1] == b'\n';
                if !starts_line {
                    self.cut = batch[done..cut_end].to_vec();
                }
                let unwritten = count_lines(&batch[done..]) - u64::from(!starts_line);
                self.failed(&e);
                self.drop_lines(unwritten);
            }
        }
    }

    /// Writes the rest of a cut line; whether it is whole now.
    fn finish_cut(&mut self) -> bool {
        match self
            .out
            .write_all(&self.cut)
            .and_then(|()| self.out.flush())
        {
            Ok(()) => {
                self.cut.clear();
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                self.recovered();
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn drop_lines(&mut self, lines: u64) {
        self.episode_dropped += lines;
        (self.stats.dropped_write_failed).fetch_add(lines, Ordering::Relaxed);
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.reader_gone |= e.kind() == ErrorKind::BrokenPipe;
        let message = if self.reader_gone {
            format!(
                "writing to {}: the reader went away ({e})",
                self.stats.target
            )
        } else {
            format!("writing to {}: {e}", self.stats.target)
        };
        if !self.stats.failing.swap(true, Ordering::Relaxed) {
            let until = if self.reader_gone {
                "from now on"
            } else {
                "until writing works again"
            };
            log::warn!("--json-out: {message}; lines are dropped and counted {until}");
        }
        self.stats.error(&message);
    }

    fn recovered(&mut self) {
        if self.stats.failing.swap(false, Ordering::Relaxed) {
            log::warn!(
                "--json-out: writing to {} works again; {} lines were dropped",
                self.stats.target,
                self.episode_dropped
            );
            self.episode_dropped = 0;
        }
    }
}

impl Lines {
    fn append(&mut self, mut more: Lines) {
        self.bytes.append(&mut more.bytes);
        self.count += more.count;
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `room` bytes, then fails with ENOSPC until given more room.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<Mutex<Vec<u8>>>,
        room: Arc<AtomicUsize>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_lines_are_due_at_their_writer_within_the_hand_off_delay() {
        let path = std::env::temp_dir().join(format!("sensor-json-due-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut out = JsonOut::open(path.to_str().unwrap()).unwrap();
        assert_eq!(out.due(), None, "nothing queued");
        let queued_at = Instant::now();
        out.event(&Event {
            kind: "exec".into(),
            ..Default::default()
        });
        let due = out.due().expect("a queued line has a deadline");
        assert!(due <= queued_at + HAND_OFF_AFTER + Duration::from_millis(1));
        out.flush_due();
        if queued_at.elapsed() < HAND_OFF_AFTER {
            assert!(out.due().is_some(), "a fresh line waits for more");
        }
        std::thread::sleep(HAND_OFF_AFTER);
        out.flush_due();
        assert_eq!(out.due(), None, "handed over once due");
        out.close(Duration::from_secs(2));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_turns_lines_reach_the_writer_together_at_its_flush() {
        let path = std::env::temp_dir().join(format!("sensor-json-turn-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut out = JsonOut::open(path.to_str().unwrap()).unwrap();
        for seq in 1..=3 {
            out.event(&Event {
                kind: "exec".into(),
                seq,
                ..Default::default()
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"",
            "queued, not yet handed over"
        );
        assert!(out.stats.queued_bytes.load(Ordering::Relaxed) > 0);
        out.flush();
        out.event(&Event {
            kind: "exit".into(),
            ..Default::default()
        });
        // Closing flushes the rest.
        out.close(Duration::from_secs(2));
        let text = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.contains("\"exit\"") {
                    "exit"
                } else {
                    "exec"
                }
            })
            .collect();
        assert_eq!(kinds, ["exec", "exec", "exec", "exit"], "{text}");
        assert_eq!(out.stats.queued_bytes.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_file(&path);
    }

    fn writer(disk: &Disk) -> Writer {
        Writer {
            out: Box::new(disk.clone()),
            stats: Arc::default(),
            cut: Vec::new(),
            reader_gone: false,
            episode_dropped: 0,
        }
    }

    #[test]
    fn a_full_disk_drops_whole_lines_and_finishes_the_cut_one_when_space_returns() {
        let disk = Disk::default();
        disk.room.store(5, Ordering::SeqCst);
        let mut w = writer(&disk);
        w.write(b"aaa\nbbbb\ncc\n", 3);
        assert_eq!(w.stats.written.load(Ordering::SeqCst), 1);
        assert_eq!(w.stats.dropped_write_failed.load(Ordering::SeqCst), 1, "cc");
        assert!(w.stats.failing.load(Ordering::SeqCst));
        w.write(b"dd\n", 1);
        assert_eq!(w.stats.dropped_write_failed.load(Ordering::SeqCst), 2);
        disk.room.store(100, Ordering::SeqCst);
        w.write(b"ee\n", 1);
        assert_eq!(&*disk.data.lock().unwrap(), b"aaa\nbbbb\nee\n");
        assert_eq!(w.stats.written.load(Ordering::SeqCst), 3);
        assert!(!w.stats.failing.load(Ordering::SeqCst));
        assert_eq!(w.stats.write_errors.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_gone_reader_is_not_written_to_again() {
        struct Closed(Arc<AtomicU64>);
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let attempts = Arc::new(AtomicU64::new(0));
        let mut w = writer(&Disk::default());
        w.out = Box::new(Closed(attempts.clone()));
        w.write(b"a\nb\n", 2);
        w.write(b"c\n", 1);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(w.stats.dropped_write_failed.load(Ordering::SeqCst), 3);
        assert!(
            w.stats
                .last_error
                .lock()
                .unwrap()
                .contains("reader went away")
        );
    }
}
