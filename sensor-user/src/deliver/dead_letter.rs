//! Alerts an OTLP collector refused for good: a record it rejects alone, whatever the retries
//! (invalid for it, or larger than it accepts). The exporter cannot hold the queue for them, so
//! each is kept here and counted (`dead_lettered` in health, `sensor_otlp_dead_lettered_total`)
//! instead of being dropped: one JSON line per alert in `otlp-dead-letter.jsonl` in the spool
//! directory (mode 0600), with the collector's answer. The file is bounded: past 16 MiB it
//! becomes `otlp-dead-letter.jsonl.1` (replacing the previous one) and a new one starts.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use sensor_proto::Alert;

/// Bytes in the file before it is rotated.
const MAX_BYTES: u64 = 16 << 20;

pub struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    /// The dead letter of the spool in `spool_dir`.
    pub fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join("otlp-dead-letter.jsonl"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `alert` with the collector's `refusal`, synced to disk.
    pub fn keep(&self, alert: &Alert, refusal: &str) -> io::Result<()> {
        if fs::metadata(&self.path).is_ok_and(|m| m.len() >= MAX_BYTES) {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, old)?;
        }
        let line = serde_json::json!({ "refused": refusal, "alert": alert });
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_alerts_are_kept_as_json_lines_with_the_refusal() {
        let dir = std::env::temp_dir().join(format!("sensor-dead-letter-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let dead = DeadLetter::new(&dir);
        for seq in 1..=2 {
            let alert = Alert {
                id: format!("id-{seq}"),
                seq,
                ..Default::default()
            };
            dead.keep(&alert, "InvalidArgument: no").unwrap();
        }
        let text = fs::read_to_string(dead.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["alert"]["id"], "id-2");
        assert_eq!(lines[1]["refused"], "InvalidArgument: no");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dead.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
