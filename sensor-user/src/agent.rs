//! `sensor run`: load, drain, decode, enrich, write, until SIGINT or SIGTERM.
//!
//! One task owns the way from ring buffer to sink, so events leave in the order the kernel
//! reserved them. The ring is drained through epoll (`AsyncFd`), never by busy polling.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use sensor_proto as pb;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    clock::Clock,
    decode,
    enrich::Enricher,
    health::{Stats, health_event},
    loader::{LoadOptions, LoadedSensor},
    output::json::JsonLines,
    privileges,
};

/// Options of `sensor run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `-` for stdout, or a file to append to.
    pub json_out: String,
    pub health_interval: Duration,
    pub proc_ring_bytes: u32,
    pub node: String,
}

/// Events, numbered, counted, and written.
struct Emitter {
    sink: JsonLines,
    seq: u64,
    stats: Stats,
}

impl Emitter {
    fn emit(&mut self, mut event: pb::Event) -> Result<()> {
        self.seq += 1;
        event.seq = self.seq;
        self.stats.count_event(&event.kind);
        self.sink.write(&event)
    }
}

pub async fn run(opts: RunOptions) -> Result<()> {
    privileges::require_root("sensor run")?;
    let started = Instant::now();
    let clock = Clock::new();
    let mut sensor = LoadedSensor::load(&LoadOptions {
        proc_ring_bytes: opts.proc_ring_bytes,
    })?;
    let ring = sensor.take_proc_ring()?;
    let counters = sensor.take_counters()?;
    let attached_in = started.elapsed();

    // Hooks are attached before the scans, so nothing falls between scan and first record.
    let mut enricher = Enricher::new(clock, opts.node.clone());
    let mut out = Emitter {
        sink: JsonLines::open(&opts.json_out)?,
        seq: 0,
        stats: Stats::default(),
    };
    for event in enricher.bootstrap() {
        out.emit(event)?;
    }
    out.emit(health_event(
        started,
        &counters,
        &sensor.hooks,
        &out.stats,
        &clock,
        &opts.node,
    ))?;
    out.sink.flush()?;
    eprintln!(
        "sensor: {} hooks attached in {} ms, ready in {} ms ({} processes, {} containers known); \
         writing JSON lines to {}",
        sensor.hooks.len(),
        attached_in.as_millis(),
        started.elapsed().as_millis(),
        enricher.process_count(),
        enricher.container_count(),
        out.sink.target(),
    );

    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until it is dropped
    // together with the AsyncFd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with epoll")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut health = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.health_interval,
        opts.health_interval,
    );
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                // Re-arm before draining: a record committed after our last read then wakes us
                // again. (Clearing after draining can lose that wakeup, and the kernel only
                // notifies a consumer that has caught up, so the ring would go quiet.)
                guard.clear_ready();
                drain(guard.get_inner_mut(), &mut enricher, &mut out, &mut batch)?;
                out.sink.flush()?;
            }
            _ = health.tick() => {
                // Backstop for a missed wakeup: never leave records waiting longer than a tick.
                drain(ring.get_mut(), &mut enricher, &mut out, &mut batch)?;
                enricher.sweep();
                out.emit(health_event(started, &counters, &sensor.hooks, &out.stats, &clock, &opts.node))?;
                out.sink.flush()?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // Whatever is still in the ring, then a last health report.
    drain(ring.get_mut(), &mut enricher, &mut out, &mut batch)?;
    out.emit(health_event(
        started,
        &counters,
        &sensor.hooks,
        &out.stats,
        &clock,
        &opts.node,
    ))?;
    out.sink.flush()?;
    drop(sensor);
    eprintln!(
        "sensor: stopped after {} events; all hooks detached",
        out.seq
    );
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    enricher: &mut Enricher,
    out: &mut Emitter,
    batch: &mut Vec<pb::Event>,
) -> Result<()> {
    while let Some(item) = ring.next() {
        out.stats.received_proc += 1;
        match decode::decode(&item) {
            Ok(record) => enricher.handle(record, batch),
            Err(err) => {
                out.stats.decode_errors += 1;
                if out.stats.decode_errors == 1 {
                    log::warn!("dropping undecodable record: {err}");
                }
            }
        }
        drop(item);
        for event in batch.drain(..) {
            out.emit(event)?;
        }
    }
    Ok(())
}
