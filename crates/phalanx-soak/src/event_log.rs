//! The soak's event log: one JSON object a line, every generator action,
//! fault, watch event and violation with its time since the start, so that
//! a failing run can be read in order and replayed with its seed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

pub struct EventLog {
    start: Instant,
    out: Mutex<BufWriter<File>>,
}

impl EventLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self { start: Instant::now(), out: Mutex::new(BufWriter::new(File::create(path)?)) })
    }

    /// Seconds since the soak started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Seconds from the soak's start to `instant`.
    pub fn at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Writes `{"t": .., "kind": kind, ..fields}`.
    pub fn write(&self, kind: &str, fields: Value) {
        let mut line = json!({"t": (self.elapsed() * 1000.0).round() / 1000.0, "kind": kind});
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not stop the checker; the report says what it saw.
        let _ = writeln!(out, "{line}");
    }

    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}
