//! Values during evaluation and how they print: Go's `%v` (maps with
//! sorted keys, `<nil>`, `<no value>`), `json.Marshal`, comparisons; every
//! text built here is bounded by [`MAX_OUTPUT`] before it is allocated.

use std::fmt::Write as _;

use serde_json::Value;

use super::exec::exec_err;
use super::{Error, MAX_OUTPUT};

/// A value during evaluation: JSON from a secret, a number of the template
/// itself, or Go's "no value" (a missing map key). The two kinds of number
/// differ as in Go: a secret's numbers are `json.Number` (a string type: it
/// prints as written, `%d` refuses it, it compares as text and not with
/// the template's `int`s), the template's literals and `len` are `int`s.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// JSON: from a secret or the data.
    Json(Value),
    /// A number of the template itself (Go's `int`).
    Int(Value),
    /// Go's "no value" (a missing map key).
    NoValue,
}

impl Val {
    pub fn json(&self) -> &Value {
        match self {
            Val::Json(v) | Val::Int(v) => v,
            Val::NoValue => &Value::Null,
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Val::NoValue => false,
            Val::Int(v) | Val::Json(v) => match v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
            },
        }
    }
}

/// Go's `%v` of a value.
pub fn go_format(v: &Value) -> String {
    let mut out = Text::default();
    // Unbounded only by name: a value is never longer than the JSON it came from.
    let _ = write_go(&mut out, v);
    out.0
}

/// Text that refuses to grow past [`MAX_OUTPUT`]: every function that
/// builds text writes into one, so the bound is checked before memory is
/// taken, not after (`replaceAll "" $big $big` once asked for 4 GiB).
#[derive(Default)]
pub(super) struct Text(pub String);

impl Text {
    pub fn room(&self, n: usize) -> Result<(), Error> {
        if self.0.len().saturating_add(n) > MAX_OUTPUT {
            return Err(exec_err(format!("a text longer than {MAX_OUTPUT} bytes")));
        }
        Ok(())
    }

    pub fn push(&mut self, t: &str) -> Result<(), Error> {
        self.room(t.len())?;
        self.0.push_str(t);
        Ok(())
    }

    pub fn push_char(&mut self, c: char) -> Result<(), Error> {
        self.room(c.len_utf8())?;
        self.0.push(c);
        Ok(())
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, t: &str) -> std::fmt::Result {
        self.push(t).map_err(|_| std::fmt::Error)
    }
}

pub(super) fn too_long() -> Error {
    exec_err(format!("a text longer than {MAX_OUTPUT} bytes"))
}

pub(super) fn write_go(out: &mut Text, v: &Value) -> Result<(), Error> {
    match v {
        Value::Null => out.push("<nil>")?,
        Value::Bool(b) => out.push(if *b { "true" } else { "false" })?,
        Value::Number(n) => write!(out, "{n}").map_err(|_| too_long())?,
        Value::String(s) => out.push(s)?,
        Value::Array(a) => {
            out.push("[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(" ")?;
                }
                write_go(out, x)?;
            }
            out.push("]")?;
        }
        Value::Object(o) => {
            out.push("map[")?;
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(" ")?;
                }
                out.push(k)?;
                out.push(":")?;
                write_go(out, &o[k])?;
            }
            out.push("]")?;
        }
    }
    Ok(())
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// `%v` of a value, as a function argument: bounded like every text.
pub(super) fn string_of(v: &Val) -> Result<String, Error> {
    let mut out = Text::default();
    match v {
        Val::NoValue => out.push("<no value>")?,
        Val::Json(j) | Val::Int(j) => write_go(&mut out, j)?,
    }
    Ok(out.0)
}

/// Go's comparison of two basic values: `int`s by value, strings and
/// `json.Number`s (a string type) as text, booleans for equality; other
/// pairs are incompatible.
pub(super) fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    let text = |v: &Val| match v {
        Val::Json(Value::String(s)) => Some(s.clone()),
        Val::Json(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match (a, b) {
        (Val::Int(Value::Number(x)), Val::Int(Value::Number(y))) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Val::Json(Value::Bool(x)), Val::Json(Value::Bool(y))) => {
            (x == y).then_some(std::cmp::Ordering::Equal).or(Some(std::cmp::Ordering::Less))
        }
        (Val::Json(Value::Null) | Val::NoValue, Val::Json(Value::Null) | Val::NoValue) => {
            Some(std::cmp::Ordering::Equal)
        }
        _ => Some(text(a)?.cmp(&text(b)?)),
    }
}

/// What serde_json writes, refused past [`MAX_OUTPUT`] as it is written.
pub(super) fn bounded_json(write: impl FnOnce(&mut Bytes) -> serde_json::Result<()>) -> Result<String, Error> {
    let mut raw = Bytes(Vec::new());
    write(&mut raw).map_err(|_| too_long())?;
    String::from_utf8(raw.0).map_err(|_| exec_err("toJSON: not UTF-8"))
}

/// Bytes that refuse to grow past [`MAX_OUTPUT`].
pub(super) struct Bytes(Vec<u8>);

impl std::io::Write for Bytes {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len().saturating_add(b.len()) > MAX_OUTPUT {
            return Err(std::io::Error::other("too long"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Go's `json.Marshal` (or `json.MarshalIndent(v, "", "  ")`): map keys
/// sorted, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`…
pub(super) fn go_json(v: &Value, pretty: bool) -> Result<Text, Error> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&o[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let v = sorted(v);
    let raw = if pretty {
        bounded_json(|w| serde_json::to_writer_pretty(w, &v))
    } else {
        bounded_json(|w| serde_json::to_writer(w, &v))
    }?;
    let mut out = Text::default();
    for c in raw.chars() {
        match c {
            '<' => out.push("\\u003c")?,
            '>' => out.push("\\u003e")?,
            '&' => out.push("\\u0026")?,
            '\u{2028}' => out.push("\\u2028")?,
            '\u{2029}' => out.push("\\u2029")?,
            c => out.push_char(c)?,
        }
    }
    Ok(out)
}
