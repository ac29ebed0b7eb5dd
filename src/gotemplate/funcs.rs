//! Every built-in function, in one table (Go's `funcs.go` `builtins()`):
//! Go's own (`and`, `or`, `not`, `eq`…, `index`, `len`, `print*`),
//! consul-template's (`secret`, `pkiCert`, `env`, `toJSON`,
//! `toJSONPretty`, `base64Encode/Decode`, `toLower`, `toUpper`,
//! `trimSpace`, `replaceAll`, `split`, `join`, `contains`) and sprig's
//! common ones (`default`, `upper`, `lower`). A function that builds text
//! or a list checks its bound before it builds.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value;

use super::exec::{Exec, exec_err};
use super::value::{Text, Val, bounded_json, compare, go_json, kind, string_of, too_long, write_go};
use super::{Error, MAX_ITEMS, MAX_OUTPUT};

/// A built-in: its name (for messages), its arguments (a piped value last).
pub(super) type Builtin = fn(&mut Exec<'_>, &str, Vec<Val>) -> Result<Val, Error>;

/// Every function, sorted by name (the parser and the evaluator look them
/// up here, and nowhere else).
pub(super) const BUILTINS: &[(&str, Builtin)] = &[
    ("and", and_or),
    ("base64Decode", base64_decode),
    ("base64Encode", base64_encode),
    ("contains", contains),
    ("default", default),
    ("env", env),
    ("eq", eq),
    ("ge", order),
    ("gt", order),
    ("index", index),
    ("join", join),
    ("le", order),
    ("len", len),
    ("lower", case),
    ("lt", order),
    ("ne", ne),
    ("not", not),
    ("or", and_or),
    ("pkiCert", secret),
    ("print", print),
    ("printf", printf),
    ("println", print),
    ("replaceAll", replace_all),
    ("secret", secret),
    ("split", split),
    ("toJSON", to_json),
    ("toJSONPretty", to_json),
    ("toLower", case),
    ("toUpper", case),
    ("trimSpace", trim_space),
    ("upper", case),
];

/// The function called `name`.
pub(super) fn lookup(name: &str) -> Option<Builtin> {
    BUILTINS.binary_search_by_key(&name, |(n, _)| n).ok().map(|i| BUILTINS[i].1)
}

fn arity(name: &str, args: &[Val], n: usize) -> Result<(), Error> {
    if args.len() == n { Ok(()) } else { Err(exec_err(format!("{name}: wants {n} argument(s), got {}", args.len()))) }
}

fn json(v: Value) -> Result<Val, Error> {
    Ok(Val::Json(v))
}

fn text(t: Text) -> Result<Val, Error> {
    Ok(Val::Json(Value::String(t.0)))
}

/// `secret "<path>" ["k=v"…]` (a write with arguments) and `pkiCert`,
/// answered by the resolver; `pkiCert` shows the PEMs as consul-template
/// does ([`crate::cert::pki_cert_view`]).
fn secret(ex: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    let Some((path, rest)) = args.split_first() else {
        return Err(exec_err(format!("{name}: wants a path")));
    };
    let mut kv = Vec::new();
    for (i, a) in rest.iter().enumerate() {
        let text = string_of(a)?;
        let (k, v) = text.split_once('=').ok_or_else(|| exec_err(format!("{name}: argument {} is not k=v", i + 2)))?;
        kv.push((k.to_owned(), v.to_owned()));
    }
    let path = string_of(path)?;
    let answer = ex.resolver.secret(&path, &kv).map_err(|e| exec_err(format!("{name} {path:?}: {e}")))?;
    json(if name == "pkiCert" { crate::cert::pki_cert_view(&answer) } else { answer })
}

fn env(ex: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    json(Value::String(ex.resolver.env(&string_of(&args[0])?)))
}

/// `and` returns the first falsy argument, `or` the first truthy one, else the last.
fn and_or(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    let want = name == "or";
    let mut last = Val::Json(Value::Bool(false));
    for a in args {
        if a.truthy() == want {
            return Ok(a);
        }
        last = a;
    }
    Ok(last)
}

fn not(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    json(Value::Bool(!args[0].truthy()))
}

/// `eq a b c…`: whether `a` equals any of the others.
fn eq(_: &mut Exec<'_>, _: &str, args: Vec<Val>) -> Result<Val, Error> {
    let Some((first, rest)) = args.split_first() else { return Err(exec_err("eq: wants arguments")) };
    let mut any = false;
    for o in rest {
        any |= compare(first, o).ok_or_else(|| exec_err("eq: incompatible types for comparison"))?.is_eq();
    }
    json(Value::Bool(any))
}

fn ne(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    let o = compare(&args[0], &args[1]).ok_or_else(|| exec_err("ne: incompatible types for comparison"))?;
    json(Value::Bool(!o.is_eq()))
}

/// `lt`, `le`, `gt`, `ge`.
fn order(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    let o =
        compare(&args[0], &args[1]).ok_or_else(|| exec_err(format!("{name}: incompatible types for comparison")))?;
    json(Value::Bool(match name {
        "lt" => o.is_lt(),
        "le" => o.is_le(),
        "gt" => o.is_gt(),
        _ => o.is_ge(),
    }))
}

/// `index x k1 k2…`: map keys and list positions in turn.
fn index(_: &mut Exec<'_>, _: &str, args: Vec<Val>) -> Result<Val, Error> {
    let Some((first, keys)) = args.split_first() else { return Err(exec_err("index: wants arguments")) };
    let mut cur = first.json().clone();
    for k in keys {
        cur = match (&cur, k.json()) {
            (Value::Object(o), Value::String(key)) => match o.get(key) {
                Some(v) => v.clone(),
                None => return Ok(Val::NoValue),
            },
            (Value::Array(a), Value::Number(n)) if matches!(k, Val::Int(_)) => n
                .as_u64()
                .and_then(|i| a.get(usize::try_from(i).ok()?))
                .cloned()
                .ok_or_else(|| exec_err("index: out of range"))?,
            (c, key) => return Err(exec_err(format!("index: can't index {} with {}", kind(c), kind(key)))),
        };
    }
    json(cur)
}

fn len(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    let n = match args[0].json() {
        Value::String(x) => x.len(),
        Value::Number(x) if matches!(args[0], Val::Json(_)) => x.to_string().len(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        other => return Err(exec_err(format!("len of {}", kind(other)))),
    };
    Ok(Val::Int(Value::from(n)))
}

/// `print` (no separator) and `println` (spaces, then a newline).
fn print(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    let mut out = Text::default();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && name == "println" {
            out.push(" ")?;
        }
        match a {
            Val::NoValue => out.push("<no value>")?,
            Val::Json(j) | Val::Int(j) => write_go(&mut out, j)?,
        }
    }
    if name == "println" {
        out.push("\n")?;
    }
    text(out)
}

/// `printf` with the verbs templates use: `%s`, `%v`, `%d`, `%q`, `%%`.
fn printf(_: &mut Exec<'_>, _: &str, args: Vec<Val>) -> Result<Val, Error> {
    let Some((format, rest)) = args.split_first() else { return Err(exec_err("printf: wants a format")) };
    let format = string_of(format)?;
    let mut out = Text::default();
    let mut args = rest.iter();
    let mut chars = format.chars();
    let long = |_| too_long();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_char(c)?;
            continue;
        }
        match chars.next() {
            Some('%') => out.push_char('%')?,
            Some(verb @ ('s' | 'v' | 'd' | 'q')) => {
                let Some(a) = args.next() else {
                    write!(out, "%!{verb}(MISSING)").map_err(long)?;
                    continue;
                };
                match verb {
                    'q' => {
                        let plain = string_of(a)?;
                        out.push(&bounded_json(|w| serde_json::to_writer(w, &plain))?)?;
                    }
                    'd' => match a {
                        Val::Int(Value::Number(n)) => write!(out, "{n}").map_err(long)?,
                        Val::Json(Value::Number(n)) => write!(out, "%!d(json.Number={n})").map_err(long)?,
                        Val::Json(Value::String(s)) => write!(out, "%!d(string={s})").map_err(long)?,
                        other => write!(out, "%!d({})", string_of(other)?).map_err(long)?,
                    },
                    _ => match a {
                        Val::NoValue => out.push("<no value>")?,
                        Val::Json(j) | Val::Int(j) => write_go(&mut out, j)?,
                    },
                }
            }
            Some(other) => return Err(exec_err(format!("printf: verb %{other} is not supported"))),
            None => out.push("%!(NOVERB)")?,
        }
    }
    text(out)
}

/// `toJSON` and `toJSONPretty`, as Go's `json.Marshal(Indent)`.
fn to_json(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    text(go_json(args[0].json(), name == "toJSONPretty")?)
}

fn base64_encode(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    let plain = string_of(&args[0])?;
    Text::default().room(plain.len().div_ceil(3).saturating_mul(4))?;
    json(Value::String(base64::engine::general_purpose::STANDARD.encode(plain)))
}

fn base64_decode(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(string_of(&args[0])?.trim())
        .map_err(|_| exec_err("base64Decode: not valid base64"))?;
    json(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `toLower`/`lower`, `toUpper`/`upper`. A character may change into
/// several (ΐ into three): built one at a time into bounded text.
fn case(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    let mut out = Text::default();
    let upper = name.ends_with("pper");
    for c in string_of(&args[0])?.chars() {
        if upper {
            c.to_uppercase().try_for_each(|u| out.push_char(u))?;
        } else {
            c.to_lowercase().try_for_each(|l| out.push_char(l))?;
        }
    }
    text(out)
}

fn trim_space(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 1)?;
    json(Value::String(string_of(&args[0])?.trim().to_owned()))
}

/// `replaceAll old new s`; the size is known before anything is built: Go
/// inserts `new` at every character boundary when `old` is empty.
fn replace_all(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 3)?;
    let (old, new, within) = (string_of(&args[0])?, string_of(&args[1])?, string_of(&args[2])?);
    let n = if old.is_empty() { within.chars().count() + 1 } else { within.matches(old.as_str()).count() };
    let size = (within.len() - n * old.len()).saturating_add(n.saturating_mul(new.len()));
    if size > MAX_OUTPUT {
        return Err(exec_err(format!("replaceAll: a text longer than {MAX_OUTPUT} bytes")));
    }
    json(Value::String(within.replace(&old, &new)))
}

/// `split sep s`: Go splits after each character when `sep` is empty (and
/// an empty text into nothing); the parts are counted before they are made.
fn split(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    let (sep, within) = (string_of(&args[0])?, string_of(&args[1])?);
    let n = if sep.is_empty() { within.chars().count() } else { within.matches(sep.as_str()).count() + 1 };
    if n > MAX_ITEMS {
        return Err(exec_err(format!("split: more than {MAX_ITEMS} parts")));
    }
    let parts: Vec<Value> = if sep.is_empty() {
        within.chars().map(|c| Value::String(c.into())).collect()
    } else {
        within.split(sep.as_str()).map(|p| Value::String(p.into())).collect()
    };
    json(Value::Array(parts))
}

/// `join sep list`.
fn join(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    let Value::Array(list) = args[1].json() else {
        return Err(exec_err(format!("join: wants a list, got {}", kind(args[1].json()))));
    };
    let sep = string_of(&args[0])?;
    let mut out = Text::default();
    for (i, x) in list.iter().enumerate() {
        if i > 0 {
            out.push(&sep)?;
        }
        write_go(&mut out, x)?;
    }
    text(out)
}

/// `contains sub s`.
fn contains(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    json(Value::Bool(string_of(&args[1])?.contains(&string_of(&args[0])?)))
}

/// `default fallback value` (sprig): the value when truthy.
fn default(_: &mut Exec<'_>, name: &str, args: Vec<Val>) -> Result<Val, Error> {
    arity(name, &args, 2)?;
    Ok(if args[1].truthy() { args[1].clone() } else { args[0].clone() })
}
