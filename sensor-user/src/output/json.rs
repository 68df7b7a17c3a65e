//! JSON lines: one `sensor.v1.Event` per line, in its proto3 JSON mapping.

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
};

use anyhow::{Context, Result};
use sensor_proto::Event;

/// A JSON lines writer to stdout (`-`) or a file (appended to).
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
    target: String,
}

impl JsonLines {
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
        Ok(Self {
            out: BufWriter::with_capacity(64 * 1024, out),
            target: target.to_string(),
        })
    }

    pub fn target(&self) -> &str {
        if self.target == "-" {
            "stdout"
        } else {
            &self.target
        }
    }

    pub fn write(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, event).context("encoding an event as JSON")?;
        self.out
            .write_all(b"\n")
            .with_context(|| format!("writing events to {}", self.target()))
    }

    /// An alert as `{"kind":"alert","alert":{...}}`: the same stream as events, told apart by
    /// `kind`, with the alert in its own proto3 JSON mapping.
    pub fn write_alert(&mut self, alert: &sensor_proto::Alert) -> Result<()> {
        let line = serde_json::json!({ "kind": "alert", "alert": alert });
        serde_json::to_writer(&mut self.out, &line).context("encoding an alert as JSON")?;
        self.out
            .write_all(b"\n")
            .with_context(|| format!("writing alerts to {}", self.target()))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing events to {}", self.target()))
    }
}
