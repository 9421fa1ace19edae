//! The state's integrity: every file carries an xxh3-64 checksum, so a
//! damaged state is refused ("corrupt state …; retrain with --full") instead
//! of training a wrong model.
//!
//! A part file is a frame around the bincode body:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `ur-state` |
//! | 4 | format (little-endian u32, [`FORMAT`]) |
//! | 4 | part index (u32) |
//! | 8 | body length in bytes (u64) |
//! | n | body: the [`StatePart`](super::StatePart), bincode |
//! | 8 | xxh3-64 of every byte before it (u64) |
//!
//! `state.json` holds a `checksum` field: the xxh3-64, in hexadecimal, of
//! the canonical JSON (keys sorted, no spaces) of the rest of the object.

use super::{FORMAT, StateError};
use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_64;

/// The first bytes of every part file.
pub const PART_MAGIC: &[u8; 8] = b"ur-state";
/// Magic, format, index and body length.
pub const PART_HEADER: usize = 24;
/// The checksum after the body.
pub const PART_TRAILER: usize = 8;
/// The field of `state.json` holding its checksum.
pub const CHECKSUM_FIELD: &str = "checksum";

/// Frames the bincode body of part `index`.
pub fn seal_part(index: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PART_HEADER + body.len() + PART_TRAILER);
    begin_part(&mut out, index, body.len());
    out.extend_from_slice(body);
    end_part(&mut out);
    out
}

/// The frame's header of part `index` with a body of `len` bytes, into an
/// empty `out` (the body is then written after it, in place).
pub fn begin_part(out: &mut Vec<u8>, index: usize, len: usize) {
    debug_assert!(out.is_empty(), "a part's header comes first");
    out.extend_from_slice(PART_MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(index as u32).to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

/// Ends the frame begun by [`begin_part`] once the body is written: the
/// checksum of everything before it.
pub fn end_part(out: &mut Vec<u8>) {
    let sum = xxh3_64(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// A part's frame around a body streamed through it: the header at once,
/// the checksum of every byte at [`PartWriter::finish`] — the same bytes
/// as [`seal_part`], without holding them.
pub struct PartWriter<W: std::io::Write> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: std::io::Write> PartWriter<W> {
    /// Writes the header of part `index`, whose body will be `len` bytes.
    pub fn new(inner: W, index: usize, len: usize) -> std::io::Result<PartWriter<W>> {
        let mut header = Vec::with_capacity(PART_HEADER);
        begin_part(&mut header, index, len);
        let mut writer = PartWriter { inner, hasher: xxhash_rust::xxh3::Xxh3::new(), bytes: 0 };
        std::io::Write::write_all(&mut writer, &header)?;
        Ok(writer)
    }

    /// Writes the checksum; returns the bytes written in all.
    pub fn finish(mut self) -> std::io::Result<u64> {
        let sum = self.hasher.digest();
        self.inner.write_all(&sum.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.bytes + PART_TRAILER as u64)
    }
}

impl<W: std::io::Write> std::io::Write for PartWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The body of the part file `path` (part `index`), once its frame is
/// intact: magic, length, checksum, format and index.
pub fn open_part<'a>(path: &str, index: usize, bytes: &'a [u8]) -> Result<&'a [u8], StateError> {
    let corrupt = |what: String| StateError::Corrupt { path: path.to_string(), what };
    if bytes.len() < PART_HEADER + PART_TRAILER {
        return Err(corrupt(format!(
            "truncated: {} bytes, a part has at least {}",
            bytes.len(),
            PART_HEADER + PART_TRAILER
        )));
    }
    if &bytes[..8] != PART_MAGIC {
        return Err(corrupt("not a state part of this release (bad magic)".into()));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let recorded_index = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let body_len = (bytes.len() - PART_HEADER - PART_TRAILER) as u64;
    if len != body_len {
        let state = if len > body_len { "truncated" } else { "longer than recorded" };
        return Err(corrupt(format!("{state}: the body has {body_len} bytes, the header records {len}")));
    }
    let (framed, trailer) = bytes.split_at(bytes.len() - PART_TRAILER);
    let recorded = u64::from_le_bytes(trailer.try_into().expect("8 bytes"));
    let actual = xxh3_64(framed);
    if recorded != actual {
        return Err(corrupt(format!("checksum mismatch (recorded {recorded:016x}, content {actual:016x})")));
    }
    check_format(path, format)?;
    if recorded_index as usize != index {
        return Err(corrupt(format!("it holds part {recorded_index}, not part {index}")));
    }
    Ok(&framed[PART_HEADER..])
}

/// `state.json`'s object with its checksum added.
pub fn seal_manifest(mut object: Map<String, Value>) -> Map<String, Value> {
    object.remove(CHECKSUM_FIELD);
    let sum = manifest_checksum(&object);
    object.insert(CHECKSUM_FIELD.into(), Value::String(format!("{sum:016x}")));
    object
}

/// Checks `state.json` (`path`, parsed) and returns it without its
/// checksum. A state of an older format (which had none) is refused as such.
pub fn open_manifest(path: &str, value: Value) -> Result<Map<String, Value>, StateError> {
    let corrupt = |what: String| StateError::Corrupt { path: path.to_string(), what };
    let Value::Object(mut object) = value else {
        return Err(corrupt("not a JSON object".into()));
    };
    let format = object.get("format").and_then(Value::as_u64);
    let Some(recorded) = object.remove(CHECKSUM_FIELD) else {
        return match format {
            Some(f) if f < u64::from(FORMAT) => Err(StateError::Older { path: path.to_string(), found: f }),
            _ => Err(corrupt(format!("no `{CHECKSUM_FIELD}` field"))),
        };
    };
    let actual = format!("{:016x}", manifest_checksum(&object));
    if recorded.as_str() != Some(actual.as_str()) {
        return Err(corrupt(format!("checksum mismatch (recorded {recorded}, content {actual})")));
    }
    match format {
        Some(f) => check_format(path, u32::try_from(f).unwrap_or(u32::MAX))?,
        None => return Err(corrupt("no `format` number".into())),
    }
    Ok(object)
}

fn check_format(path: &str, found: u32) -> Result<(), StateError> {
    let found64 = u64::from(found);
    match found.cmp(&FORMAT) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StateError::Older { path: path.to_string(), found: found64 }),
        std::cmp::Ordering::Greater => Err(StateError::Newer { path: path.to_string(), found: found64 }),
    }
}

/// xxh3-64 of the canonical JSON of an object.
fn manifest_checksum(object: &Map<String, Value>) -> u64 {
    let mut text = String::new();
    canonical(&mut text, &Value::Object(object.clone()));
    xxh3_64(text.as_bytes())
}

/// Compact JSON with every object's keys sorted, whatever the map type.
fn canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(out, &map[key]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_part_opens_and_every_flipped_bit_is_refused() {
        let body: Vec<u8> = (0..40u8).collect();
        let sealed = seal_part(3, &body);
        assert_eq!(open_part("p", 3, &sealed).unwrap(), &body[..]);
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = open_part("p", 3, &bad).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "bit {bit}: {err}");
        }
        for len in 0..sealed.len() {
            assert!(matches!(open_part("p", 3, &sealed[..len]), Err(StateError::Corrupt { .. })), "length {len}");
        }
        let err = open_part("p", 4, &sealed).unwrap_err().to_string();
        assert_eq!(err, "corrupt state p: it holds part 3, not part 4; retrain with --full");
    }

    #[test]
    fn a_part_of_another_format_is_named_as_such() {
        let mut old = seal_part(0, b"body");
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = old.len() - PART_TRAILER;
        let sum = xxh3_64(&old[..n]);
        old[n..].copy_from_slice(&sum.to_le_bytes());
        let err = open_part("p", 0, &old).unwrap_err().to_string();
        assert_eq!(err, format!("p: state format 1 is older than this release ({FORMAT}): retrain with --full"));
    }

    #[test]
    fn manifest_checksum_ignores_key_order_and_catches_changes() {
        let value = serde_json::json!({"format": FORMAT, "parts": 2, "recorded": {"b": 1, "a": [1, {"y": 2, "x": 3}]}});
        let Value::Object(object) = value else { unreachable!() };
        let sealed = seal_manifest(object.clone());
        let text = serde_json::to_string_pretty(&sealed).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(open_manifest("s", parsed.clone()).unwrap(), object);
        let mut changed = parsed.clone();
        changed["parts"] = 3.into();
        let err = open_manifest("s", changed).unwrap_err().to_string();
        assert!(err.starts_with("corrupt state s: checksum mismatch") && err.ends_with("retrain with --full"), "{err}");
        let mut unsealed = parsed;
        unsealed.as_object_mut().unwrap().remove(CHECKSUM_FIELD);
        assert!(matches!(open_manifest("s", unsealed), Err(StateError::Corrupt { .. })));
        let old = serde_json::json!({"format": 1, "parts": 2});
        let err = open_manifest("s", old).unwrap_err().to_string();
        assert_eq!(err, format!("s: state format 1 is older than this release ({FORMAT}): retrain with --full"));
    }
}
