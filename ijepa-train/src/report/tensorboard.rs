//! TensorBoard scalars: event files as TensorFlow writes them, so
//! `tensorboard --logdir runs/` shows every metric of a run.
//!
//! An event file is a sequence of TFRecords (length, CRC-32C of the length,
//! the bytes, CRC-32C of the bytes; both CRCs masked) whose bytes are
//! `tensorflow.Event` protocol buffers. Only what scalars need is encoded:
//! `wall_time`, `step`, `file_version`, a `Summary` of `simple_value`s and
//! a `SessionLog` START. A resumed run writes a new file that starts with
//! a START at the first step it will log again: TensorBoard then drops the
//! older files' events from that step on, as it does for TensorFlow jobs
//! restarted from a checkpoint, so what it shows equals `metrics.csv`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io, Result};

/// Protocol-buffer wire encoding of the few fields used.
mod wire {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (wire type 2).
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        varint(out, u64::from(field << 3 | 1));
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        varint(out, u64::from(field << 3 | 5));
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        varint(out, u64::from(field << 3));
        varint(out, v as u64);
    }
}

/// What one event carries besides its time and step.
enum Payload<'a> {
    FileVersion,
    Scalars(&'a [(&'a str, f32)]),
    SessionStart,
}

/// `tensorflow.Event` (event.proto): wall_time = 1, step = 2,
/// file_version = 3, summary = 5, session_log = 7.
fn event(wall_time: f64, step: u64, payload: Payload<'_>) -> Vec<u8> {
    let mut e = vec![];
    wire::double(&mut e, 1, wall_time);
    wire::int(&mut e, 2, step as i64);
    match payload {
        Payload::FileVersion => wire::bytes(&mut e, 3, b"brain.Event:2"),
        Payload::Scalars(values) => {
            // Summary { repeated Value value = 1 }, Value { tag = 1, simple_value = 2 }.
            let mut summary = vec![];
            for (tag, v) in values {
                let mut value = vec![];
                wire::bytes(&mut value, 1, tag.as_bytes());
                wire::float(&mut value, 2, *v);
                wire::bytes(&mut summary, 1, &value);
            }
            wire::bytes(&mut e, 5, &summary);
        }
        // SessionLog { status = 1 } with START = 1.
        Payload::SessionStart => wire::bytes(&mut e, 7, &[0x08, 0x01]),
    }
    e
}

fn masked_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(b);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An event file of scalars in a run directory, appended and flushed one
/// step at a time.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Starts a new event file in `dir`
    /// (`events.out.tfevents.<seconds>.ijepa-rs.<n>`, never an existing
    /// one). `resumed_at` is the first step a resumed run logs: earlier
    /// files' events from it on are superseded.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(dir: &Path, resumed_at: Option<u64>) -> Result<Self> {
        let wall = now();
        let mut n = 0;
        let (path, file) = loop {
            let p = dir.join(format!("events.out.tfevents.{}.ijepa-rs.{n}", wall as u64));
            match OpenOptions::new().append(true).create_new(true).open(&p) {
                Ok(f) => break (p, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io(&p)(e)),
            }
        };
        let mut w = Self { path, file };
        w.write(&event(wall, 0, Payload::FileVersion))?;
        if let Some(step) = resumed_at {
            w.write(&event(wall, step, Payload::SessionStart))?;
        }
        Ok(w)
    }

    /// Appends the scalars `values` (tag, value) of `step`.
    ///
    /// # Errors
    /// A failed write.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f32)]) -> Result<()> {
        self.write(&event(now(), step, Payload::Scalars(values)))
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(data))
            .and_then(|_| self.file.flush())
            .map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the TFRecords of `bytes`, checking both CRCs of each.
    fn records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while !bytes.is_empty() {
            let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[..8]));
            let data = &bytes[12..12 + len];
            let crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            out.push(data.to_vec());
            bytes = &bytes[16 + len..];
        }
        out
    }

    #[test]
    fn crc32c_and_its_mask_are_tensorflows() {
        // CRC-32C's check value, and TensorFlow's mask of it (crc32c.h:
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8, worked out by hand).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn scalar_events_encode_as_protocol_buffers() {
        let e = event(1.5, 300, Payload::Scalars(&[("loss", 0.25)]));
        let mut want = vec![0x09];
        want.extend(1.5f64.to_le_bytes());
        want.extend([0x10, 0xac, 0x02]); // step 300 as a varint
                                         // summary (field 5) { value (1) { tag (1) "loss", simple_value (2) 0.25 } }
        want.extend([0x2a, 13, 0x0a, 11, 0x0a, 4]);
        want.extend(b"loss");
        want.push(0x15);
        want.extend(0.25f32.to_le_bytes());
        assert_eq!(e, want);
    }

    #[test]
    fn a_file_is_framed_records_and_a_resume_starts_a_new_one() {
        let dir = std::env::temp_dir().join(format!("ijepa-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir, None).unwrap();
        w.scalars(1, &[("loss", 1.0), ("lr", 1e-4)]).unwrap();
        w.scalars(2, &[("loss", 0.5)]).unwrap();
        let first = w.path().to_path_buf();
        let r = EventWriter::create(&dir, Some(2)).unwrap();
        assert_ne!(r.path(), first, "a resume never appends to an old file");
        let recs = records(&std::fs::read(&first).unwrap());
        assert_eq!(recs.len(), 3);
        assert!(recs[0].ends_with(b"brain.Event:2"));
        let recs = records(&std::fs::read(r.path()).unwrap());
        assert_eq!(recs.len(), 2);
        assert!(recs[1].ends_with(&[0x10, 2, 0x3a, 2, 0x08, 0x01]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
