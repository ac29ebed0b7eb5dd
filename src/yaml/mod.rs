//! YAML read and written the way `kubectl` does.
//!
//! `kubectl` reads manifests with YAML 1.1 scalar rules (go-yaml v2 behind
//! `sigs.k8s.io/yaml`): a plain `0640` is the octal integer 416, a plain
//! `yes`/`off` is a boolean, while a quoted `"0077"` is a string. We read the
//! parser's events ourselves (with each scalar's style) to apply those rules,
//! turn each document into JSON (the form the API server stores), and write
//! YAML back so that every string that could be read as anything else is
//! quoted: a round trip never changes a value or its type. Comments are not
//! kept. Spec: <https://yaml.org/type/> (YAML 1.1 types).

mod positions;

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

pub use positions::{DocumentPositions, Located, NodeKind, positions};

/// Why a YAML stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// YAML that has no JSON form or is ambiguous.
    #[error("line {line}: {message}")]
    Unsupported {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

enum Frame {
    Seq(Vec<Value>, usize),
    Map { map: Map<String, Value>, key: Option<String>, anchor: usize, merged: Vec<Map<String, Value>> },
}

/// How many nodes aliases may add by expansion: at least this many, and no
/// more than the stream itself holds, so a stream's value is never more
/// than about twice its own size ("billion laughs": a 545-byte stream of
/// nested aliases otherwise expands to gigabytes). go-yaml, behind kubectl,
/// refuses such streams too ("excessive aliasing").
const MIN_ALIAS_NODES: usize = 10_000;

/// Parses every document of a YAML stream into JSON values, dropping empty
/// documents.
///
/// # Errors
/// [`YamlError`] with the line of the problem; streams whose aliases expand
/// beyond [`MIN_ALIAS_NODES`] or the stream's own node count.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchor's value and its node count (what an alias to it adds).
    let mut anchors: HashMap<usize, (Value, usize)> = HashMap::new();
    let mut current: Option<Value> = None;
    let (mut own_nodes, mut alias_nodes) = (0usize, 0usize);

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError::Syntax {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        let line = span.start.line();
        let node = match event {
            Event::DocumentStart(_) => {
                current = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take() {
                    if !doc.is_null() {
                        docs.push(doc);
                    }
                }
                anchors.clear();
                continue;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map { map: Map::new(), key: None, anchor, merged: Vec::new() });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor)) => {
                    own_nodes += 1;
                    remember(&mut anchors, anchor, Value::Array(items))
                }
                _ => return Err(unsupported(line, "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { mut map, anchor, merged, .. }) => {
                    // Merge keys (`<<: *base`) fill in what the map lacks.
                    for m in merged {
                        for (k, v) in m {
                            map.entry(k).or_insert(v);
                        }
                    }
                    own_nodes += 1;
                    remember(&mut anchors, anchor, Value::Object(map))
                }
                _ => return Err(unsupported(line, "unbalanced mapping")),
            },
            Event::Alias(id) => match anchors.get(&id) {
                Some((v, n)) => {
                    alias_nodes += n;
                    if alias_nodes > MIN_ALIAS_NODES.max(own_nodes) {
                        return Err(unsupported(
                            line,
                            &format!(
                                "aliases expand to more than {} nodes: refused (excessive aliasing)",
                                MIN_ALIAS_NODES.max(own_nodes)
                            ),
                        ));
                    }
                    v.clone()
                }
                None => return Err(unsupported(line, "alias to an unknown anchor")),
            },
            Event::Scalar(text, style, anchor, tag) => {
                // A scalar in key position stays text; `<<` marks a merge.
                if let Some(Frame::Map { key: key @ None, .. }) = stack.last_mut() {
                    let k = if style == ScalarStyle::Plain && text == "<<" && tag.is_none() {
                        "<<".to_owned()
                    } else {
                        key_text(&text, style)
                    };
                    *key = Some(k);
                    continue;
                }
                let value = resolve(&text, style, tag.as_deref(), span)?;
                own_nodes += 1;
                remember(&mut anchors, anchor, value)
            }
        };
        // Attach the finished node to its parent, or make it the document.
        match stack.last_mut() {
            None => current = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map { map, key, merged, .. }) => match key.take() {
                None => return Err(unsupported(line, "a mapping key must be a scalar")),
                Some(k) if k == "<<" => match node {
                    Value::Object(m) => merged.push(m),
                    Value::Array(list) => {
                        for item in list {
                            match item {
                                Value::Object(m) => merged.push(m),
                                _ => return Err(unsupported(line, "a merge key (<<) takes mappings only")),
                            }
                        }
                    }
                    _ => return Err(unsupported(line, "a merge key (<<) takes mappings only")),
                },
                Some(k) => {
                    if map.contains_key(&k) {
                        return Err(unsupported(line, &format!("duplicate key {k:?}")));
                    }
                    map.insert(k, node);
                }
            },
        }
    }
    Ok(docs)
}

fn unsupported(line: usize, message: &str) -> YamlError {
    YamlError::Unsupported { line, message: message.to_owned() }
}

fn remember(anchors: &mut HashMap<usize, (Value, usize)>, anchor: usize, value: Value) -> Value {
    if anchor > 0 {
        anchors.insert(anchor, (value.clone(), count_nodes(&value)));
    }
    value
}

/// The nodes of `v` (itself included).
fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Keys become JSON object keys as `sigs.k8s.io/yaml` makes them: a plain
/// key is resolved first and then written as text, so `on:` is `"true"` and
/// `0640:` is `"416"`, as kubectl would send them.
fn key_text(text: &str, style: ScalarStyle) -> String {
    if style != ScalarStyle::Plain {
        return text.to_owned();
    }
    match resolve_plain(text) {
        Value::String(s) => s,
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>, span: Span) -> Result<Value, YamlError> {
    let line = span.start.line();
    if let Some(tag) = tag.filter(|t| t.is_yaml_core_schema()) {
        let bad = || unsupported(line, &format!("{text:?} is not a valid !!{}", tag.suffix));
        return match tag.suffix.as_str() {
            "str" | "binary" | "timestamp" => Ok(Value::String(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => match resolve_plain(text) {
                Value::Bool(b) => Ok(Value::Bool(b)),
                _ => Err(bad()),
            },
            "int" => match resolve_plain(text) {
                v @ Value::Number(_) if v.is_i64() || v.is_u64() => Ok(v),
                _ => Err(bad()),
            },
            "float" => match resolve_plain(text) {
                Value::Number(n) => Ok(n.as_f64().and_then(Number::from_f64).map_or(Value::Number(n), Value::Number)),
                _ => Err(bad()),
            },
            "map" | "seq" => Err(bad()),
            _ => Ok(Value::String(text.to_owned())),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

/// The YAML 1.1 type of a plain scalar, as go-yaml v2 resolves it.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => return Value::Bool(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(n) = parse_int(s) {
        return Value::Number(n);
    }
    if is_float(s) {
        let plain: String = s.chars().filter(|c| *c != '_').collect();
        if let Some(n) = plain.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_owned())
}

/// Go's `strconv.ParseInt(s, 0, 64)` after removing `_`: decimal, `0x` hex,
/// `0o` or leading-`0` octal, `0b` binary, with an optional sign.
fn parse_int(s: &str) -> Option<Number> {
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match plain.as_bytes().first()? {
        b'-' => (true, &plain[1..]),
        b'+' => (false, &plain[1..]),
        _ => (false, plain.as_str()),
    };
    if digits.is_empty() {
        return None;
    }
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o").or_else(|| digits.strip_prefix("0O")) {
        (8, o)
    } else if let Some(b) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        (2, b)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if neg {
        let v = i64::try_from(magnitude).ok().map(|m| -m).or_else(|| (magnitude == 1u64 << 63).then_some(i64::MIN))?;
        Some(Number::from(v))
    } else {
        Some(Number::from(magnitude))
    }
}

/// go-yaml v2's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
/// (after removing `_`).
fn is_float(s: &str) -> bool {
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    let b = plain.trim_start_matches(['-', '+']).as_bytes();
    if plain.len() - b.len() > 1 {
        return false;
    }
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if int_digits == 0 && frac == 0 {
            return false;
        }
        i += frac;
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Whether a string must be quoted to be read back as the same string, by a
/// YAML 1.1 reader (kubectl) or a YAML 1.2 one.
fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return true };
    if !matches!(resolve_plain(s), Value::String(_)) {
        return true;
    }
    // YAML 1.2 and 1.1 extras: special floats, merge/value keys, timestamps.
    let lower = s.to_ascii_lowercase();
    if matches!(lower.trim_start_matches(['-', '+']), ".inf" | ".nan") || s == "<<" || s == "=" {
        return true;
    }
    // Document markers, where a top-level scalar starts at column 0.
    if s.starts_with("---") || s.starts_with("...") {
        return true;
    }
    let b = s.as_bytes();
    if b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        return true;
    }
    // `-` may start a plain scalar when a non-space follows (`--env`).
    let dash_ok = first == '-' && s.len() > 1 && !s[1..].starts_with([' ', '\t']) && s != "---";
    if ("-?:,[]{}#&*!|>'\"%@`".contains(first) && !dash_ok) || first.is_whitespace() {
        return true;
    }
    if s.ends_with([' ', ':', '\t']) {
        return true;
    }
    s.contains(": ") || s.contains(" #") || s.contains(":\t") || s.chars().any(|c| c.is_control() || c == '\u{feff}')
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A string that reads back the same as a literal block (`|`): multi-line,
/// printable, not starting with whitespace.
fn literal_block(s: &str) -> Option<&'static str> {
    if !s.contains('\n')
        || s.starts_with([' ', '\t', '\n'])
        || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return None;
    }
    // Lines that are only spaces before a content line would confuse the
    // indentation detection of some readers; quote instead.
    if s.lines().any(|l| !l.is_empty() && l.trim().is_empty()) {
        return None;
    }
    Some(if s.ends_with("\n\n") {
        "|+"
    } else if s.ends_with('\n') {
        "|"
    } else {
        "|-"
    })
}

fn scalar(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Null => out.push_str("null\n"),
        Value::Bool(b) => {
            out.push_str(if *b { "true\n" } else { "false\n" });
        }
        Value::Number(n) => {
            out.push_str(&n.to_string());
            out.push('\n');
        }
        Value::String(s) => {
            // A top-level block scalar's lines sit at column 0, where `---`
            // and `...` end the document: top-level strings are quoted.
            if let Some(header) = literal_block(s).filter(|_| indent > 0) {
                out.push_str(header);
                out.push('\n');
                let body = s.strip_suffix('\n').unwrap_or(s);
                for line in body.split('\n') {
                    if !line.is_empty() {
                        out.push_str(&" ".repeat(indent));
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            } else if needs_quotes(s) {
                out.push_str(&quoted(s));
                out.push('\n');
            } else {
                out.push_str(s);
                out.push('\n');
            }
        }
        Value::Array(_) => out.push_str("[]\n"),
        Value::Object(_) => out.push_str("{}\n"),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, inline_first: bool) {
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 || !inline_first {
            out.push_str(&" ".repeat(indent));
        }
        let key = if needs_quotes(k) || k.contains('\n') { quoted(k) } else { k.clone() };
        // An implicit key is at most 1024 characters (YAML 1.2, 7.4.2);
        // longer ones are written as explicit `? key` entries.
        if key.len() > 1000 {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            out.push_str(&" ".repeat(indent));
        } else {
            out.push_str(&key);
        }
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_map(out, m, indent + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(out, a, indent + 2, false);
            }
            _ => {
                out.push(' ');
                scalar(out, v, indent + 2);
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize, inline_first: bool) {
    for (i, v) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if is_block(v) => write_map(out, m, indent + 2, true),
            Value::Array(a) if is_block(v) => write_seq(out, a, indent + 2, true),
            _ => scalar(out, v, indent + 2),
        }
    }
}

/// Writes one document as block-style YAML, keys in their order.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0, false),
        _ => scalar(&mut out, v, 0),
    }
    out
}

/// Writes documents separated by `---`.
pub fn to_yaml_stream(docs: &[Value]) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut d = parse_documents(text).unwrap();
        assert_eq!(d.len(), 1);
        d.remove(0)
    }

    #[test]
    fn reads_yaml_1_1_scalars_like_kubectl() {
        let v = one(
            "octal: 0640\nquoted: \"0077\"\n\"yes\": yes\n'off': off\nq: \"off\"\nint: 8080\nhex: 0x1F\nneg: -3\nfloat: 1.5\nnull: ~\ns: '123'\nunder: 1_000\nver: 1.36.1\n",
        );
        assert_eq!(
            v,
            json!({"octal": 416, "quoted": "0077", "yes": true, "off": false, "q": "off", "int": 8080, "hex": 31,
                   "neg": -3, "float": 1.5, "null": null, "s": "123", "under": 1000, "ver": "1.36.1"})
        );
    }

    #[test]
    fn writes_strings_that_look_like_document_markers_so_they_read_back() {
        // Found by the yaml fuzz target: `--- |` and a top-level block
        // scalar with a `---` line were read back as new documents.
        let docs = vec![json!("--- |"), json!("a\n--- b\n...\n"), json!({"k": "x\n---\n"}), json!("... x")];
        assert_eq!(parse_documents(&to_yaml_stream(&docs)).unwrap(), docs);
    }

    #[test]
    fn writes_keys_past_the_implicit_key_limit_as_explicit_keys() {
        // Found by the yaml fuzz target: a key that escapes to more than
        // 1024 characters was written where a reader refuses it.
        let long = "k\u{11}".repeat(400);
        for docs in [vec![json!({&long: "v"})], vec![json!({"a": {&long: [1, {&long: {"b": 2}}]}})]] {
            let written = to_yaml_stream(&docs);
            assert!(written.contains("? "), "{written}");
            assert_eq!(parse_documents(&written).unwrap(), docs);
        }
    }

    #[test]
    fn drops_empty_documents_and_keeps_order() {
        let d = parse_documents("---\n# only a comment\n---\nb: 1\na: 2\n---\n\n...\n").unwrap();
        assert_eq!(d, vec![json!({"b": 1, "a": 2})]);
        assert_eq!(serde_json::to_string(&d[0]).unwrap(), r#"{"b":1,"a":2}"#);
    }

    #[test]
    fn refuses_excessive_aliasing() {
        // The classic 545-byte "billion laughs": 9 levels of 9 aliases.
        let mut text =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        assert!(text.len() < 600, "{}", text.len());
        let e = parse_documents(&text).unwrap_err();
        assert!(e.to_string().contains("excessive aliasing"), "{e}");
        // Ordinary reuse stays fine.
        let ok = "base: &b {image: x, ports: [1, 2]}\none: *b\ntwo: *b\nthree: {<<: *b, image: z}\n";
        assert_eq!(parse_documents(ok).unwrap()[0]["three"]["image"], "z");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = one("base: &b {p: 1, q: 2}\nderived:\n  <<: *b\n  q: 3\nlist: [*b]\n");
        assert_eq!(v["derived"], json!({"q": 3, "p": 1}));
        assert_eq!(v["list"][0], json!({"p": 1, "q": 2}));
    }

    #[test]
    fn rejects_duplicate_keys_and_syntax_errors_with_lines() {
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(matches!(e, YamlError::Unsupported { line: 3, .. }), "{e}");
        let e = parse_documents("a: [1, 2\n").unwrap_err();
        assert!(matches!(e, YamlError::Syntax { .. }), "{e}");
    }

    #[test]
    fn tags_force_types() {
        assert_eq!(one("a: !!str 0640\nb: !!int \"12\"\n"), json!({"a": "0640", "b": 12}));
        assert_eq!(one("on: 1\n0640: 2\n~: 3\n\"on\": 4\n"), json!({"true": 1, "416": 2, "null": 3, "on": 4}));
        assert!(parse_documents("a: !!int abc\n").is_err());
    }

    #[test]
    fn writes_strings_that_would_change_type_quoted() {
        for s in [
            "yes",
            "off",
            "0077",
            "8080",
            "1e3",
            "true",
            "null",
            "~",
            "",
            "0x10",
            "-1",
            ".5",
            ".inf",
            "2024-11-02",
            "a: b",
            "a #b",
            "#x",
            "- x",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "'x",
            "\"x",
            "x:",
            " x",
            "x ",
            "<<",
            "=",
            "{a}",
            "[a]",
            ",a",
            "|x",
            ">x",
            "?x",
            "a\tb",
            "08",
            "1_0",
            "-",
            "---",
            "- ",
            "-1.5",
            "-.inf",
            "-0x1",
        ] {
            let doc = json!({"k": s});
            let text = to_yaml(&doc);
            assert_eq!(one(&text), doc, "{s:?} written as {text:?}");
        }
    }

    #[test]
    fn writes_plain_what_is_unambiguous() {
        let text = to_yaml(&json!({"image": "nginx:1.27.2", "url": "https://x.example/a?b=c", "v": "1.36.1", "n": 3}));
        assert_eq!(text, "image: nginx:1.27.2\nurl: https://x.example/a?b=c\nv: 1.36.1\n\"n\": 3\n");
    }

    #[test]
    fn writes_multiline_strings_as_literal_blocks() {
        for s in ["a\nb\n", "a\nb", "a\n\nb\n", "a\nb\n\n", "  lead\nx", "x\n  indented\n", "tab\there\nx"] {
            let doc = json!({"m": {"k": s}, "l": [s]});
            let text = to_yaml(&doc);
            assert_eq!(one(&text), doc, "{s:?} written as {text:?}");
        }
        assert!(to_yaml(&json!({"k": "a\nb\n"})).starts_with("k: |\n  a\n  b\n"));
    }

    #[test]
    fn round_trips_nested_structures() {
        let doc = json!({
            "a": [{"b": [1, [2, 3], {}], "c": []}, [], [[1]], {"d": {"e": null}}],
            "f": {"g": [{"h": "i", "j": {"k": "l"}}]},
            "1": "numeric key", "true": "bool key", "key with: colon": 1,
        });
        assert_eq!(one(&to_yaml(&doc)), doc);
    }

    #[test]
    fn stream_separates_documents() {
        let docs = vec![json!({"a": 1}), json!({"b": 2})];
        assert_eq!(to_yaml_stream(&docs), "a: 1\n---\nb: 2\n");
        assert_eq!(parse_documents(&to_yaml_stream(&docs)).unwrap(), docs);
    }
}
