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
//! values it ignores; RFC 8259 text is UTF-8).

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
pub fn scan_event(line: &[u8]) -> Result<EventMembers<'_>, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8 at column {}", e.valid_up_to() + 1))?;
    let mut s = Scanner { s: text, b: text.as_bytes(), i: 0 };
    let mut m = EventMembers::default();
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
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            if s.peek() != Some(b'"') {
                return Err(s.err_eof_or("expected `\"` to start a key"));
            }
            let key = s.string()?;
            s.ws();
            if s.peek() != Some(b':') {
                return Err(s.err_eof_or("expected `:`"));
            }
            s.i += 1;
            s.ws();
            let slot = match &*key {
                "event" => Some(&mut m.event),
                "entityType" => Some(&mut m.entity_type),
                "entityId" => Some(&mut m.entity_id),
                "targetEntityType" => Some(&mut m.target_entity_type),
                "targetEntityId" => Some(&mut m.target_entity_id),
                "eventTime" => Some(&mut m.event_time),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return Err(format!("duplicate field `{key}` at column {}", s.i));
                }
                *slot = Some(s.field()?);
            } else if key == "properties" {
                if m.properties.is_some() {
                    return Err(format!("duplicate field `properties` at column {}", s.i));
                }
                let start = s.i;
                let kind = s.skip_value()?;
                m.properties = Some(&text[start..s.i]);
                if kind == "null" {
                    m.properties = Some("null");
                }
            } else {
                s.skip_value()?;
            }
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

struct Scanner<'a> {
    s: &'a str,
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
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek() {
                None => return Err("EOF while parsing a string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Borrowed(&self.s[start..self.i - 1]));
                }
                Some(b'\\') => return self.escaped_string(start).map(Cow::Owned),
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
            }
        }
    }

    fn escaped_string(&mut self, start: usize) -> Result<String, String> {
        let mut out = String::from(&self.s[start..self.i]);
        loop {
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
                            out.push(char::from_u32(code).ok_or_else(|| self.err("invalid escape"))?);
                            continue;
                        }
                        None => return Err("EOF while parsing a string".into()),
                        Some(_) => return Err(self.err("invalid escape")),
                    };
                    out.push(c);
                    self.i += 1;
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {
                    // Copy a run of plain characters at once.
                    let run_start = self.i;
                    while let Some(c) = self.peek() {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(&self.s[run_start..self.i]);
                }
            }
        }
    }

    /// Skips a string at `"`, checking escapes as serde_json does when it
    /// ignores a value (four hex digits after `\u`, surrogates unchecked).
    fn skip_string(&mut self) -> Result<(), String> {
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err("EOF while parsing a string".into()),
                Some(b'"') => {
                    self.i += 1;
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
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
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
        let mut stack: Vec<u8> = Vec::new();
        // Each iteration is at an opening bracket or right after a value.
        let mut opening = true;
        loop {
            if opening {
                let open = self.b[self.i];
                stack.push(open);
                if stack.len() > MAX_DEPTH {
                    return Err(self.err("recursion limit exceeded"));
                }
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
                let top = *stack.last().expect("inside a container");
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
            if stack.is_empty() {
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
}
