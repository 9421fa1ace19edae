//! A strict JSON scanner specialised for PIO event lines.
//!
//! Reading JSON is most of the cost of training, and a PIO event has a fixed
//! shape: one object whose few interesting members are strings. This
//! scanner validates the whole line as JSON (RFC 8259: string escapes and
//! surrogates, number grammar, literals, nesting up to 128 levels, nothing
//! after the object) but only materialises the members ur-train uses;
//! `properties` is returned as raw text. Strings without escapes are
//! borrowed from the line. It accepts and rejects what `serde_json` does
//! for these lines (tested against it), at several times its speed — except
//! that invalid UTF-8 anywhere is an error (serde_json lets it pass inside
//! values it ignores; RFC 8259 text is UTF-8). Strings are searched eight
//! bytes at a time for their end, and UTF-8 is validated only in strings
//! that hold non-ASCII bytes (see [`scan_event`]).
//! Lines whose members come in PIO's usual order are read by a fast path
//! up to the first surprise, the general scanner going on from there.

use std::borrow::Cow;

/// A member value as found, whatever its JSON type.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Str(Cow<'a, str>),
    Null,
    /// Another type: "a number", "an object", ...
    Other(&'static str),
}

/// The members of an event line that training reads.
#[derive(Debug, Default)]
pub struct EventMembers<'a> {
    pub event: Option<Field<'a>>,
    pub entity_type: Option<Field<'a>>,
    pub entity_id: Option<Field<'a>>,
    pub target_entity_type: Option<Field<'a>>,
    pub target_entity_id: Option<Field<'a>>,
    pub event_time: Option<Field<'a>>,
    /// Raw JSON text of `properties` (absent or `null`: `None`).
    pub properties: Option<&'a str>,
}

const MAX_DEPTH: usize = 128;

/// Scans one line; `Err` is a message for "malformed JSON: ...".
///
/// UTF-8 is validated inside strings only, where non-ASCII bytes are seen:
/// everything else the scanner accepts is ASCII, so an accepted line is
/// valid UTF-8. A rejected line is checked whole, so that invalid UTF-8 is
/// what is reported wherever it is, as when the line was validated first.
pub fn scan_event(line: &[u8]) -> Result<EventMembers<'_>, String> {
    scan(line).map_err(|e| match std::str::from_utf8(line) {
        Err(bad) => format!("invalid UTF-8 at column {}", bad.valid_up_to() + 1),
        Ok(_) => e,
    })
}

fn scan(line: &[u8]) -> Result<EventMembers<'_>, String> {
    scan_from(line, usual_prefix(line))
}

/// The general scanner alone, without the fast path for PIO's member order:
/// `benches/scan.rs` measures what the fast path saves.
#[cfg(feature = "bench-json")]
#[doc(hidden)]
pub fn scan_event_general(line: &[u8]) -> Result<EventMembers<'_>, String> {
    scan_from(line, Prefix { m: EventMembers::default(), at: 0, read: 0 })
}

/// Where [`usual_prefix`] stopped: the members it read and the index right
/// after the last of them (`read == 0`: nothing read, `at` is 0).
struct Prefix<'a> {
    m: EventMembers<'a>,
    at: usize,
    read: usize,
}

/// The general scanner, resuming after the members `prefix` read (the
/// state it would have reached itself at that point).
fn scan_from<'a>(line: &'a [u8], prefix: Prefix<'a>) -> Result<EventMembers<'a>, String> {
    let Prefix { mut m, at, read } = prefix;
    let mut s = Scanner { b: line, i: at };
    // After a member of the prefix: next comes `,` or `}`.
    let mut after_member = read > 0;
    if !after_member {
        s.ws();
        if s.peek() != Some(b'{') {
            return Err(match s.peek() {
                None => "EOF while parsing a value".into(),
                Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                    format!("invalid type: expected an event object at column {}", s.i + 1)
                }
                Some(_) => s.err("expected value"),
            });
        }
        s.i += 1;
        s.ws();
    }
    if !after_member && s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            if !after_member {
                s.ws();
                if s.peek() != Some(b'"') {
                    return Err(s.err_eof_or("expected `\"` to start a key"));
                }
                s.member(&mut m)?;
            }
            after_member = false;
            s.ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(s.err_eof_or("expected `,` or `}`")),
            }
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return Err(s.err("trailing characters"));
    }
    if m.properties == Some("null") {
        m.properties = None;
    }
    Ok(m)
}

/// The members in the order `pio export` and the event server write them,
/// each with what precedes its value. `properties` is expected empty.
const USUAL: [&[u8]; 7] = [
    b"{\"event\":\"",
    b",\"entityType\":\"",
    b",\"entityId\":\"",
    b",\"targetEntityType\":\"",
    b",\"targetEntityId\":\"",
    b",\"properties\":{}",
    b",\"eventTime\":\"",
];

/// The fast path: reads the members of `line` that come in the [`USUAL`]
/// order, without whitespace, as ASCII strings without escapes (and
/// `properties` as `{}`), up to the first one that does not. Each is read
/// exactly as the general scanner would read it, so that it can go on from
/// there; all the members are distinct, so none is a duplicate.
#[inline]
fn usual_prefix(line: &[u8]) -> Prefix<'_> {
    let mut p = Prefix { m: EventMembers::default(), at: 0, read: 0 };
    for (n, key) in USUAL.iter().enumerate() {
        let start = p.at + key.len();
        if line.get(p.at..start) != Some(key) {
            break;
        }
        if n == 5 {
            // SAFETY: `{}` is ASCII.
            p.m.properties = Some(unsafe { std::str::from_utf8_unchecked(&line[start - 2..start]) });
            p.at = start;
            p.read += 1;
            continue;
        }
        let mut s = Scanner { b: line, i: start };
        if s.plain_run() != 0 || s.peek() != Some(b'"') {
            break;
        }
        // SAFETY: the value's bytes were seen to be ASCII.
        let value = Field::Str(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(&line[start..s.i]) }));
        let slot = match n {
            0 => &mut p.m.event,
            1 => &mut p.m.entity_type,
            2 => &mut p.m.entity_id,
            3 => &mut p.m.target_entity_type,
            4 => &mut p.m.target_entity_id,
            _ => &mut p.m.event_time,
        };
        *slot = Some(value);
        p.at = s.i + 1;
        p.read += 1;
    }
    p
}

/// The members of an event object, by key.
#[derive(Clone, Copy)]
enum Key {
    Event,
    EntityType,
    EntityId,
    TargetEntityType,
    TargetEntityId,
    EventTime,
    Properties,
    Other,
}

impl Key {
    #[inline]
    fn of(key: &[u8]) -> Key {
        // By length first: one comparison per key.
        match key.len() {
            5 if key == b"event" => Key::Event,
            8 if key == b"entityId" => Key::EntityId,
            9 if key == b"eventTime" => Key::EventTime,
            10 if key == b"entityType" => Key::EntityType,
            10 if key == b"properties" => Key::Properties,
            14 if key == b"targetEntityId" => Key::TargetEntityId,
            16 if key == b"targetEntityType" => Key::TargetEntityType,
            _ => Key::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Key::Event => "event",
            Key::EntityType => "entityType",
            Key::EntityId => "entityId",
            Key::TargetEntityType => "targetEntityType",
            Key::TargetEntityId => "targetEntityId",
            Key::EventTime => "eventTime",
            Key::Properties => "properties",
            Key::Other => "",
        }
    }
}

/// `bytes` as text: validated as UTF-8 when `non_ascii` is non-zero (the
/// high bits of the bytes seen), taken as is when it is zero, which callers
/// pass only for bytes they have seen to be ASCII or validated piece by
/// piece. The error is replaced by [`scan_event`]'s UTF-8 message.
fn text(bytes: &[u8], non_ascii: u64) -> Result<&str, String> {
    if non_ascii == 0 {
        // SAFETY: as documented, the bytes are ASCII or already validated.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).map_err(|_| "invalid UTF-8".to_string())
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that ends a run of plain string
/// characters (`"`, `\` or a control character below 0x20). Bits above the
/// lowest set one may be spurious; the lowest is exact.
#[inline]
fn stops(w: u64) -> u64 {
    let quote = w ^ (ONES * b'"' as u64);
    let backslash = w ^ (ONES * b'\\' as u64);
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH
}

/// The open containers of a skipped value: one bit per level, set for an
/// object, the innermost lowest.
#[derive(Default)]
struct Nesting {
    objects: u128,
    depth: usize,
}

const _: () = assert!(MAX_DEPTH <= u128::BITS as usize);

impl Nesting {
    fn push(&mut self, open: u8) {
        self.objects = (self.objects << 1) | (open == b'{') as u128;
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.objects >>= 1;
        self.depth -= 1;
    }

    /// The innermost container's opening bracket.
    fn top(&self) -> u8 {
        if self.objects & 1 == 1 { b'{' } else { b'[' }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, msg: &str) -> String {
        format!("{msg} at column {}", self.i + 1)
    }

    fn err_eof_or(&self, msg: &str) -> String {
        if self.i >= self.b.len() { "EOF while parsing an object".into() } else { self.err(msg) }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Skips plain string characters, eight at a time where eight are left,
    /// up to `"`, `\`, a control character or the end; returns the high
    /// bits of the bytes skipped (non-zero: not all ASCII).
    #[inline]
    fn plain_run(&mut self) -> u64 {
        let mut high = 0;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let stop = stops(w);
            if stop != 0 {
                high |= w & HIGH & (stop.wrapping_sub(1) & !stop);
                self.i += stop.trailing_zeros() as usize / 8;
                return high;
            }
            high |= w & HIGH;
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            high |= (c & 0x80) as u64;
            self.i += 1;
        }
        high
    }

    /// One member of the event object, from its key at `"` to the end of its value.
    fn member(&mut self, m: &mut EventMembers<'a>) -> Result<(), String> {
        let key = self.key()?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.err_eof_or("expected `:`"));
        }
        self.i += 1;
        self.ws();
        let slot = match key {
            Key::Event => &mut m.event,
            Key::EntityType => &mut m.entity_type,
            Key::EntityId => &mut m.entity_id,
            Key::TargetEntityType => &mut m.target_entity_type,
            Key::TargetEntityId => &mut m.target_entity_id,
            Key::EventTime => &mut m.event_time,
            Key::Properties => {
                if m.properties.is_some() {
                    return Err(format!("duplicate field `properties` at column {}", self.i));
                }
                let start = self.i;
                let kind = self.skip_value()?;
                // Its strings were validated as they were skipped; the rest is ASCII.
                m.properties = Some(if kind == "null" { "null" } else { text(&self.b[start..self.i], 0)? });
                return Ok(());
            }
            Key::Other => return self.skip_value().map(|_| ()),
        };
        if slot.is_some() {
            return Err(format!("duplicate field `{}` at column {}", key.name(), self.i));
        }
        *slot = Some(self.field()?);
        Ok(())
    }

    /// A key at `"`: which member it names. Keys without escapes are
    /// matched where they lie.
    #[inline]
    fn key(&mut self) -> Result<Key, String> {
        let at = self.i;
        self.i += 1;
        let high = self.plain_run();
        if self.peek() == Some(b'"') {
            let key = text(&self.b[at + 1..self.i], high)?;
            self.i += 1;
            return Ok(Key::of(key.as_bytes()));
        }
        self.i = at;
        Ok(Key::of(self.string()?.as_bytes()))
    }

    /// A member value we want as a string.
    fn field(&mut self) -> Result<Field<'a>, String> {
        match self.peek() {
            Some(b'"') => Ok(Field::Str(self.string()?)),
            _ => match self.skip_value()? {
                "null" => Ok(Field::Null),
                kind => Ok(Field::Other(kind)),
            },
        }
    }

    /// A string at `"`; borrowed unless it has escapes.
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.i += 1;
        let start = self.i;
        let high = self.plain_run();
        match self.peek() {
            None => Err("EOF while parsing a string".into()),
            Some(b'"') => {
                self.i += 1;
                Ok(Cow::Borrowed(text(&self.b[start..self.i - 1], high)?))
            }
            Some(b'\\') => self.escaped_string(start).map(Cow::Owned),
            Some(_) => Err(self.err("control character in string")),
        }
    }

    fn escaped_string(&mut self, start: usize) -> Result<String, String> {
        let mut out = String::from(text(&self.b[start..self.i], 1)?);
        loop {
            let run_start = self.i;
            let high = self.plain_run();
            out.push_str(text(&self.b[run_start..self.i], high)?);
            match self.peek() {
                None => return Err("EOF while parsing a string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        None => return Err("EOF while parsing a string".into()),
                        Some(_) => return Err(self.err("invalid escape")),
                    };
                    out.push(c);
                    self.i += 1;
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    /// The character of a `\u` escape (after the `u`), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(self.err("lone leading surrogate in hex escape"));
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("lone leading surrogate in hex escape"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(self.err("lone trailing surrogate in hex escape"));
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid escape"))
    }

    /// Skips a string at `"`, checking escapes as serde_json does when it
    /// ignores a value (four hex digits after `\u`, surrogates unchecked)
    /// and UTF-8.
    fn skip_string(&mut self) -> Result<(), String> {
        self.i += 1;
        let start = self.i;
        let mut high = 0;
        loop {
            high |= self.plain_run();
            match self.peek() {
                None => return Err("EOF while parsing a string".into()),
                Some(b'"') => {
                    self.i += 1;
                    text(&self.b[start..self.i - 1], high)?;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        None => return Err("EOF while parsing a string".into()),
                        Some(_) => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.b.get(self.i..self.i + 4).ok_or_else(|| "EOF while parsing a string".to_string())?;
        let mut v = 0u32;
        for &d in digits {
            let x = (d as char).to_digit(16).ok_or_else(|| self.err("invalid escape"))?;
            v = v * 16 + x;
        }
        self.i += 4;
        Ok(v)
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), String> {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            Ok(())
        } else if self.i + lit.len() > self.b.len() && lit.starts_with(&self.b[self.i..]) {
            Err("EOF while parsing a value".into())
        } else {
            Err(self.err("expected ident"))
        }
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            None => return Err("EOF while parsing a value".into()),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err_eof_or_number());
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err_eof_or_number());
            }
            self.digits();
        }
        Ok(())
    }

    fn err_eof_or_number(&self) -> String {
        if self.i >= self.b.len() { "EOF while parsing a value".into() } else { self.err("invalid number") }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// Skips one value of any type, validating it; returns its kind.
    fn skip_value(&mut self) -> Result<&'static str, String> {
        match self.peek() {
            None => Err("EOF while parsing a value".into()),
            Some(b'"') => self.skip_string().map(|_| "a string"),
            Some(b't') => self.literal(b"true").map(|_| "a boolean"),
            Some(b'f') => self.literal(b"false").map(|_| "a boolean"),
            Some(b'n') => self.literal(b"null").map(|_| "null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| "a number"),
            Some(open @ (b'{' | b'[')) => {
                self.skip_container()?;
                Ok(if open == b'{' { "an object" } else { "an array" })
            }
            Some(_) => Err(self.err("expected value")),
        }
    }

    /// Skips an object or array without recursion.
    fn skip_container(&mut self) -> Result<(), String> {
        let mut stack = Nesting::default();
        // Each iteration is at an opening bracket or right after a value.
        let mut opening = true;
        loop {
            if opening {
                let open = self.b[self.i];
                if stack.depth == MAX_DEPTH {
                    return Err(self.err("recursion limit exceeded"));
                }
                stack.push(open);
                self.i += 1;
                self.ws();
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.i += 1;
                    stack.pop();
                } else if !self.element(open, &mut opening)? {
                    continue;
                }
            } else {
                self.ws();
                let top = stack.top();
                let close = if top == b'{' { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        if !self.element(top, &mut opening)? {
                            continue;
                        }
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        stack.pop();
                    }
                    None => {
                        return Err(format!("EOF while parsing {}", if top == b'{' { "an object" } else { "a list" }));
                    }
                    Some(_) => {
                        return Err(self.err(if top == b'{' { "expected `,` or `}`" } else { "expected `,` or `]`" }));
                    }
                }
            }
            if stack.depth == 0 {
                return Ok(());
            }
            opening = false;
        }
    }

    /// Reads the start of an element of a container (`{` or `[`): a key and
    /// `:` for objects, then a scalar (returns true) or an opening bracket
    /// (sets `opening`, returns false).
    fn element(&mut self, container: u8, opening: &mut bool) -> Result<bool, String> {
        if container == b'{' {
            if self.peek() != Some(b'"') {
                return Err(self.err_eof_or("expected `\"` to start a key"));
            }
            self.skip_string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err_eof_or("expected `:`"));
            }
            self.i += 1;
            self.ws();
        }
        match self.peek() {
            Some(b'{' | b'[') => {
                *opening = true;
                Ok(false)
            }
            _ => {
                self.skip_value()?;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> EventMembers<'_> {
        scan_event(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn reads_members_and_skips_the_rest() {
        let m = ok(
            r#" {"eventId":"x","event":"buy","entityType":"user","entityId":"u\"1\u00e9\ud83d\ude00","targetEntityId":null,"properties":{"a":[1,2.5e3,-0.1,{"b":[]}],"c":true},"eventTime":"2026-01-01","tags":[],"n":false} "#,
        );
        assert_eq!(m.event, Some(Field::Str("buy".into())));
        assert_eq!(m.entity_id, Some(Field::Str("u\"1é😀".into())));
        assert_eq!(m.target_entity_id, Some(Field::Null));
        assert_eq!(m.target_entity_type, None);
        assert_eq!(m.properties, Some(r#"{"a":[1,2.5e3,-0.1,{"b":[]}],"c":true}"#));
        let m = ok(r#"{"event":1,"entityId":[{}],"properties":null}"#);
        assert_eq!(m.event, Some(Field::Other("a number")));
        assert_eq!(m.entity_id, Some(Field::Other("an array")));
        assert_eq!(m.properties, None);
        assert!(matches!(ok(r#"{"event":"plain"}"#).event, Some(Field::Str(Cow::Borrowed(_)))));
    }

    #[test]
    fn rejects_what_serde_json_rejects() {
        for bad in [
            "",
            "{",
            "}",
            "[]",
            "\"x\"",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1} x",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":\"\\x\"}",
            "{\"event\":\"\\ud800\"}",
            "{\"entityId\":\"\\udc00\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":{\"b\"}}",
            "{\"event\":\"a\",\"event\":\"b\"}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{'a':1}",
            "{\"a\":\"unterminated}",
            "{\"a\":+1}",
            "{\"a\":.5}",
            "{\"a\":NaN}",
        ] {
            assert!(scan_event(bad.as_bytes()).is_err(), "accepted {bad:?}");
            assert!(
                serde_json::from_str::<crate::source::event::tests_support::RawEventRef>(bad).is_err(),
                "serde accepts {bad:?}"
            );
        }
        let deep = "{\"a\":".to_string() + &"[".repeat(200) + &"]".repeat(200) + "}";
        assert!(scan_event(deep.as_bytes()).is_err());
        assert!(scan_event(b"{\"a\":\"\xff\"}").is_err());
    }

    /// Strings of every length up to a few eight-byte words, with one
    /// special byte at every position: the word-at-a-time search must stop
    /// where the byte loop did, and accept and read what serde_json does.
    #[test]
    fn special_bytes_at_every_position() {
        use crate::source::event::tests_support::RawEventRef;
        let specials: [&[u8]; 10] =
            [b"\"", b"\\", b"\\n", b"\\u00e9", b"\x01", b"\x1f", b" ", b"\x7f", "é😀".as_bytes(), b"\xff"];
        for len in 0..26 {
            for pos in 0..=len {
                for special in specials {
                    let mut value = vec![b'a'; len];
                    value.splice(pos..pos, special.iter().copied());
                    for template in [&b"{\"event\":\"#\"}"[..], b"{\"x\":\"#\",\"properties\":[\"#\"]}", b"{\"#\":1}"] {
                        let mut line = Vec::new();
                        for &c in template {
                            if c == b'#' { line.extend_from_slice(&value) } else { line.push(c) }
                        }
                        let ours = scan_event(&line);
                        let shown = String::from_utf8_lossy(&line).into_owned();
                        match std::str::from_utf8(&line) {
                            Err(e) => assert_eq!(
                                ours.map(|_| ()),
                                Err(format!("invalid UTF-8 at column {}", e.valid_up_to() + 1)),
                                "{shown}"
                            ),
                            Ok(text) => {
                                let theirs = serde_json::from_str::<RawEventRef>(text);
                                assert_eq!(ours.is_ok(), theirs.is_ok(), "{shown}");
                                if let (Ok(a), Ok(b)) = (ours, theirs) {
                                    assert_eq!(a.event, b.event.map(|f| f.0), "{shown}");
                                    assert_eq!(a.properties, b.properties.map(|r| r.get()), "{shown}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_is_reported_wherever_it_is() {
        let cases: [(&[u8], usize); 6] = [
            (b"{\"event\":\"a\xffb\"}", 12),
            (b"{\"ev\xc3\":1}", 5),
            (b"{\"properties\":{\"k\":[\"\xe9\"]}}", 22),
            (b"{\"event\":\"a\\n\xff\"}", 14),
            (b"{\"event\":\xff}", 10),
            // A syntax error before the bad byte: UTF-8 is still what is reported.
            (b"{\"event\" 1,\"x\":\"\xf0\x9f\"}", 17),
        ];
        for (line, column) in cases {
            let err = scan_event(line).map(|_| ()).unwrap_err();
            assert_eq!(err, format!("invalid UTF-8 at column {column}"), "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(ok("{\"event\":\"é\",\"properties\":{\"ü\":\"ß\"}}").properties, Some("{\"ü\":\"ß\"}"));
    }

    #[test]
    fn nesting_limit_is_unchanged() {
        let nested = |n: usize| format!("{{\"properties\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(scan_event(nested(128).as_bytes()).is_ok());
        let err = scan_event(nested(129).as_bytes()).map(|_| ()).unwrap_err();
        assert_eq!(err, "recursion limit exceeded at column 143");
        let mixed = format!("{{\"a\":{}1{}}}", "[{\"k\":".repeat(64), "}]".repeat(64));
        assert!(scan_event(mixed.as_bytes()).is_ok());
    }

    const USUAL_LINE: &str = r#"{"event":"view","entityType":"user","entityId":"user-0","targetEntityType":"item","targetEntityId":"item-113504","properties":{},"eventTime":"2025-08-31T04:17:47.000Z"}"#;

    /// The general path alone, as `scan` was before the fast path.
    fn general(line: &[u8]) -> Result<EventMembers<'_>, String> {
        scan_from(line, Prefix { m: EventMembers::default(), at: 0, read: 0 })
    }

    fn assert_same(line: &[u8]) {
        let (fast, slow) = (scan(line), general(line));
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{}", String::from_utf8_lossy(line));
    }

    /// The fast path gives what the general path gives on lines near the
    /// usual one: every byte changed, removed or preceded by another, the
    /// members in every order, each member repeated anywhere.
    #[test]
    fn usual_prefix_agrees_with_the_general_path() {
        let usual = USUAL_LINE.as_bytes();
        assert_eq!(usual_prefix(usual).read, 7);
        let members: Vec<String> = USUAL_LINE[1..USUAL_LINE.len() - 1]
            .split(",\"")
            .enumerate()
            .map(|(i, m)| if i == 0 { m.to_string() } else { format!("\"{m}") })
            .collect();
        assert_eq!(members.len(), 7);
        let join = |ms: &[&String]| format!("{{{}}}", ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","));
        let mut bases = vec![usual.to_vec(), b" {\"event\":\"a\\u00e9\",\"entityType\":\"\xc3\xa9\"}".to_vec()];
        bases.push(join(&members[..5].iter().collect::<Vec<_>>()).into_bytes());
        // Every order of the members (Heap's algorithm).
        let mut order: Vec<&String> = members.iter().collect();
        let mut c = [0usize; 7];
        assert_same(join(&order).as_bytes());
        let mut i = 0;
        while i < 7 {
            if c[i] < i {
                order.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                assert_same(join(&order).as_bytes());
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
        // Each member repeated at every place.
        for dup in &members {
            for at in 0..=7 {
                let mut ms: Vec<&String> = members.iter().collect();
                ms.insert(at, dup);
                bases.push(join(&ms).into_bytes());
            }
        }
        let others: &[u8] = b" \t\"\\,:{}[]x0n\x01\x7f\xff\xc3";
        for base in &bases {
            assert_same(base);
            for at in 0..=base.len() {
                for &c in others {
                    let mut line = base.clone();
                    line.insert(at, c);
                    assert_same(&line);
                    if at < base.len() {
                        line.remove(at + 1);
                        line[at] = c;
                        assert_same(&line);
                    }
                }
                if at < base.len() {
                    let mut line = base.clone();
                    line.remove(at);
                    assert_same(&line);
                    assert_same(&base[..at]);
                }
            }
        }
    }

    #[test]
    fn error_messages_keep_their_columns() {
        for (line, message) in [
            ("{\"event\":\"a\",\"event\":\"b\"}", "duplicate field `event` at column 21"),
            ("{\"properties\":{},\"properties\":1}", "duplicate field `properties` at column 30"),
            ("{\"\\u0065vent\":\"a\",\"event\":1}", "duplicate field `event` at column 26"),
            ("{\"a\":\"x\ty\"}", "control character in string at column 8"),
            ("{\"a\":\"\\q\"}", "invalid escape at column 8"),
            ("{\"a\":[1,]}", "expected value at column 9"),
            ("{\"a\":1} x", "trailing characters at column 9"),
            ("{\"a\":\"abcdefghijk", "EOF while parsing a string"),
        ] {
            assert_eq!(scan_event(line.as_bytes()).map(|_| ()).unwrap_err(), message, "{line}");
        }
    }
}
