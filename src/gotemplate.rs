//! Go `text/template`, the subset Vault Agent (consul-template) templates
//! are written in, evaluated over JSON values: text and `{{ }}` actions
//! (custom delimiters, `{{-`/`-}}` trimming, `{{/* */}}` comments),
//! `if`/`else if`/`else`, `with`, `range` (with `$k, $v :=`), variables,
//! `$`, pipelines with `|`, parenthesised pipelines, and the functions of
//! [`call`]. Values print as Go's `%v` does: maps as `map[k:v …]` with
//! sorted keys, lists as `[a b]`, null as `<nil>`, a missing map key as
//! `<no value>`.
//!
//! Hostile templates are bounded: the template's size, the nesting depth,
//! the evaluation steps and the output size all have limits, and every
//! error names the line and column (parse) or the function or field
//! (execution) — never a value, which may be a secret's. Reading secrets goes through [`Resolver`], so the core
//! stays free of I/O; a recording resolver discovers the paths a template
//! reads.

use std::fmt::Write as _;

use serde_json::Value;

/// The largest template accepted.
pub const MAX_TEMPLATE: usize = 256 * 1024;
/// The deepest nesting of blocks and parentheses.
pub const MAX_DEPTH: usize = 64;
/// The most evaluation steps (actions, block iterations, function calls).
pub const MAX_STEPS: u64 = 1_000_000;
/// The largest output, and the largest text any function builds.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// The most items a function builds into a list (`split`).
pub const MAX_ITEMS: usize = 65_536;
/// The most distinct `secret`/`pkiCert` calls in one template: each is a
/// request the agent sends and a path the policy checks.
pub const MAX_CALLS: usize = 100;

/// Why a template could not be parsed or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The template is malformed.
    #[error("template: line {line}, column {col}: {reason}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        col: usize,
        /// What is wrong.
        reason: String,
    },
    /// Running it failed.
    #[error("template: {0}")]
    Exec(String),
}

/// Where a template's `secret` and `env` calls are answered.
pub trait Resolver {
    /// The secret at `path` as consul-template shows it (`Data`,
    /// `LeaseID`, `LeaseDuration`, `Renewable`, `Warnings`); with
    /// `args` (`k=v`), a write, as for PKI issuing.
    ///
    /// # Errors
    /// A message naming the path.
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String>;

    /// The environment variable `name` (empty when unset).
    fn env(&mut self, name: &str) -> String {
        let _ = name;
        String::new()
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipe),
    If { pipe: Pipe, then: Vec<Node>, otherwise: Vec<Node> },
    With { pipe: Pipe, then: Vec<Node>, otherwise: Vec<Node> },
    Range { pipe: Pipe, body: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug, Clone, PartialEq)]
struct Pipe {
    /// Variables declared (`$x :=`, `$k, $v :=`) or assigned (`$x =`).
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.a.b` (empty: `.`).
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone: the root).
    Var(String, Vec<String>),
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Box<Pipe>, Vec<String>),
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Open,
    Close,
    Ident(String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(serde_json::Number),
    LParen,
    RParen(Vec<String>),
    Pipe,
    Declare,
    Assign,
    Comma,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    left: &'a str,
    right: &'a str,
    toks: Vec<(Tok, usize)>,
}

fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn parse_error(src: &str, at: usize, reason: impl Into<String>) -> Error {
    let (line, col) = position(src, at);
    Error::Parse { line, col, reason: reason.into() }
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, reason: impl Into<String>) -> Error {
        parse_error(self.src, at, reason)
    }

    fn run(mut self) -> Result<Vec<(Tok, usize)>, Error> {
        let mut trim_next = false;
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let open = rest.find(self.left);
            let mut text = &rest[..open.unwrap_or(rest.len())];
            if trim_next {
                text = text.trim_start_matches([' ', '\t', '\r', '\n']);
            }
            let Some(open) = open else {
                if !text.is_empty() {
                    self.toks.push((Tok::Text(text.to_owned()), self.pos));
                }
                break;
            };
            let action = self.pos + open;
            let mut inner = action + self.left.len();
            let trim_before = self.src[inner..].starts_with("- ")
                || self.src[inner..].starts_with("-\t")
                || self.src[inner..].starts_with("-\n");
            if trim_before {
                text = text.trim_end_matches([' ', '\t', '\r', '\n']);
                inner += 1;
            }
            if !text.is_empty() {
                self.toks.push((Tok::Text(text.to_owned()), self.pos));
            }
            // A comment: {{/* … */}}, possibly trimmed.
            let after_space = inner + self.src[inner..].len() - self.src[inner..].trim_start().len();
            if self.src[after_space..].starts_with("/*") {
                let end = self.src[after_space..]
                    .find("*/")
                    .map(|e| after_space + e + 2)
                    .ok_or_else(|| self.err(action, "unclosed comment"))?;
                let tail = self.src[end..].trim_start();
                let close_at = self.src.len() - tail.len();
                let (trim, skip) = if let Some(t) = tail.strip_prefix('-') {
                    if t.starts_with(self.right) { (true, 1) } else { (false, 0) }
                } else {
                    (false, 0)
                };
                if !self.src[close_at + skip..].starts_with(self.right) {
                    return Err(self.err(end, "comment ends before the closing delimiter"));
                }
                trim_next = trim;
                self.pos = close_at + skip + self.right.len();
                continue;
            }
            self.toks.push((Tok::Open, action));
            self.pos = inner;
            trim_next = self.action()?;
        }
        Ok(self.toks)
    }

    /// Lexes one action up to its closing delimiter; returns whether the
    /// text after it is trimmed.
    fn action(&mut self) -> Result<bool, Error> {
        loop {
            let rest = &self.src[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(self.err(self.pos, "unclosed action"));
            };
            let at = self.pos;
            if rest.starts_with(self.right) {
                self.toks.push((Tok::Close, at));
                self.pos += self.right.len();
                return Ok(false);
            }
            if (rest.starts_with(" -") || rest.starts_with("\t-") || rest.starts_with("\n-"))
                && rest[2..].starts_with(self.right)
            {
                self.toks.push((Tok::Close, at));
                self.pos += 2 + self.right.len();
                return Ok(true);
            }
            match c {
                ' ' | '\t' | '\r' | '\n' => self.pos += 1,
                '(' => {
                    self.toks.push((Tok::LParen, at));
                    self.pos += 1;
                }
                ')' => {
                    self.pos += 1;
                    let fields = self.fields()?;
                    self.toks.push((Tok::RParen(fields), at));
                }
                '|' => {
                    self.toks.push((Tok::Pipe, at));
                    self.pos += 1;
                }
                ',' => {
                    self.toks.push((Tok::Comma, at));
                    self.pos += 1;
                }
                ':' if rest.starts_with(":=") => {
                    self.toks.push((Tok::Declare, at));
                    self.pos += 2;
                }
                '=' => {
                    self.toks.push((Tok::Assign, at));
                    self.pos += 1;
                }
                '"' => {
                    let s = self.quoted()?;
                    self.toks.push((Tok::Str(s), at));
                }
                '`' => {
                    let end = rest[1..].find('`').ok_or_else(|| self.err(at, "unclosed raw string"))?;
                    self.toks.push((Tok::Str(rest[1..=end].to_owned()), at));
                    self.pos += end + 2;
                }
                '.' => {
                    let fields = self.fields()?;
                    self.toks.push((Tok::Field(fields), at));
                }
                '$' => {
                    self.pos += 1;
                    let name = self.word();
                    let fields = self.fields()?;
                    self.toks.push((Tok::Var(format!("${name}"), fields), at));
                }
                c if c.is_ascii_digit() || c == '-' || c == '+' => {
                    let len = rest
                        .char_indices()
                        .find(|&(i, ch)| {
                            !(ch.is_ascii_alphanumeric() || ch == '.' || ((ch == '-' || ch == '+') && i == 0))
                        })
                        .map_or(rest.len(), |(i, _)| i);
                    let text = &rest[..len];
                    let n: serde_json::Number = text
                        .parse::<i64>()
                        .map(serde_json::Number::from)
                        .ok()
                        .or_else(|| text.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
                        .ok_or_else(|| self.err(at, format!("bad number {text:?}")))?;
                    self.toks.push((Tok::Num(n), at));
                    self.pos += len;
                }
                c if c.is_alphabetic() || c == '_' => {
                    let w = self.word();
                    self.toks.push((Tok::Ident(w), at));
                }
                other => return Err(self.err(at, format!("unexpected {other:?} in an action"))),
            }
        }
    }

    fn word(&mut self) -> String {
        let rest = &self.src[self.pos..];
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        self.pos += len;
        rest[..len].to_owned()
    }

    /// `.a.b.c` at the current position (possibly none).
    fn fields(&mut self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        while self.src[self.pos..].starts_with('.') {
            let at = self.pos;
            self.pos += 1;
            let w = self.word();
            if w.is_empty() {
                // `.` alone is the dot; `..` is an error.
                if out.is_empty() && !self.src[self.pos..].starts_with('.') {
                    return Ok(out);
                }
                return Err(self.err(at, "empty field name"));
            }
            out.push(w);
        }
        Ok(out)
    }

    fn quoted(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\'')) => out.push('\''),
                    Some((_, other)) => return Err(self.err(start, format!("unknown escape \\{other}"))),
                    None => break,
                },
                '\n' => return Err(self.err(start, "newline in a string")),
                c => out.push(c),
            }
        }
        Err(self.err(start, "unclosed string"))
    }
}

// --------------------------------------------------------------- parsing

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: usize,
}

/// What ended a list of nodes (with the keyword's position).
enum Stop {
    Eof,
    End(usize),
    Else(usize, Option<(String, Pipe)>),
}

impl Template {
    /// Parses `src` with the delimiters `left` and `right` (`{{`, `}}` by default).
    ///
    /// # Errors
    /// [`Error::Parse`] naming the line, column and reason.
    pub fn parse_with(src: &str, left: &str, right: &str) -> Result<Template, Error> {
        if src.len() > MAX_TEMPLATE {
            return Err(Error::Parse { line: 1, col: 1, reason: format!("longer than {MAX_TEMPLATE} bytes") });
        }
        if left.is_empty() || right.is_empty() {
            return Err(Error::Parse { line: 1, col: 1, reason: "empty delimiter".into() });
        }
        let toks = Lexer { src, pos: 0, left, right, toks: Vec::new() }.run()?;
        let mut p = Parser { src, toks, i: 0, depth: 0 };
        let (nodes, end) = p.list()?;
        match end {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End(at) => Err(parse_error(src, at, "{{end}} without a block")),
            Stop::Else(at, _) => Err(parse_error(src, at, "{{else}} without a block")),
        }
    }

    /// Parses `src` with `{{` and `}}`.
    ///
    /// # Errors
    /// [`Error::Parse`].
    pub fn parse(src: &str) -> Result<Template, Error> {
        Self::parse_with(src, "{{", "}}")
    }

    /// Every `secret` call of the template, in order of appearance, each
    /// once: the paths an agent must read (or write, with arguments)
    /// before it can render. Found without running the template, so a
    /// path must be written as a literal string.
    ///
    /// # Errors
    /// [`Error::Exec`] naming the call whose path or argument is not a
    /// literal string.
    pub fn secret_calls(&self) -> Result<Vec<SecretCall>, Error> {
        let mut calls = Calls::default();
        walk_nodes(&self.nodes, &mut calls)?;
        Ok(calls.list)
    }
}

/// One `secret` call of a template: a read of `path`, or with `args` a write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretCall {
    /// The Vault API path.
    pub path: String,
    /// `k=v` arguments, split; empty for a read.
    pub args: Vec<(String, String)>,
}

impl SecretCall {
    /// Whether the call writes (`secret` with `k=v` arguments, `pkiCert`).
    pub fn is_write(&self) -> bool {
        !self.args.is_empty()
    }
}

/// The distinct calls in order of appearance, each found in constant time
/// (a template of 256 KiB holds some 12,000 calls: a list search per call
/// made that quadratic), at most [`MAX_CALLS`].
#[derive(Default)]
struct Calls {
    list: Vec<SecretCall>,
    seen: std::collections::HashSet<SecretCall>,
}

impl Calls {
    fn add(&mut self, call: SecretCall) -> Result<(), Error> {
        if self.seen.contains(&call) {
            return Ok(());
        }
        if self.list.len() == MAX_CALLS {
            return Err(exec_err(format!(
                "more than {MAX_CALLS} distinct secret calls in one template (each is a request the agent sends)"
            )));
        }
        self.seen.insert(call.clone());
        self.list.push(call);
        Ok(())
    }
}

fn walk_nodes(nodes: &[Node], out: &mut Calls) -> Result<(), Error> {
    for n in nodes {
        match n {
            Node::Text(_) => {}
            Node::Action(p) => walk_pipe(p, out)?,
            Node::If { pipe, then, otherwise }
            | Node::With { pipe, then, otherwise }
            | Node::Range { pipe, body: then, otherwise } => {
                walk_pipe(pipe, out)?;
                walk_nodes(then, out)?;
                walk_nodes(otherwise, out)?;
            }
        }
    }
    Ok(())
}

fn walk_pipe(p: &Pipe, out: &mut Calls) -> Result<(), Error> {
    for (i, cmd) in p.cmds.iter().enumerate() {
        for a in cmd {
            if let Arg::Sub(inner, _) = a {
                walk_pipe(inner, out)?;
            }
        }
        if !matches!(cmd.first(), Some(Arg::Func(f)) if f == "secret" || f == "pkiCert") {
            continue;
        }
        let literal = |a: &Arg| match a {
            Arg::Str(s) => Some(s.clone()),
            _ => None,
        };
        let refuse = || {
            exec_err(
                "secret: the path and arguments must be literal strings (\"db/creds/app\"), so the agent knows what to read before it renders",
            )
        };
        if i > 0 {
            return Err(refuse());
        }
        let mut rest = cmd[1..].iter();
        let path = rest.next().and_then(literal).ok_or_else(refuse)?;
        let mut args = Vec::new();
        for (n, a) in rest.enumerate() {
            let text = literal(a).ok_or_else(refuse)?;
            let (k, v) = text
                .split_once('=')
                .ok_or_else(|| exec_err(format!("secret {path:?}: argument {} is not k=v", n + 2)))?;
            args.push((k.to_owned(), v.to_owned()));
        }
        out.add(SecretCall { path, args })?;
    }
    Ok(())
}

impl Parser<'_> {
    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(self.src.len(), |t| t.1)
    }

    fn err_at(&self, reason: impl Into<String>) -> Error {
        parse_error(self.src, self.at(), reason)
    }

    fn err_prev(&self, reason: impl Into<String>) -> Error {
        let at = self.i.checked_sub(1).and_then(|i| self.toks.get(i)).map_or(0, |t| t.1);
        parse_error(self.src, at, reason)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.0.clone());
        self.i += 1;
        t
    }

    fn expect_close(&mut self) -> Result<(), Error> {
        match self.next() {
            Some(Tok::Close) => Ok(()),
            _ => Err(self.err_prev("expected the end of the action")),
        }
    }

    /// Nodes up to the end of input, `{{end}}` or `{{else …}}`.
    fn list(&mut self) -> Result<(Vec<Node>, Stop), Error> {
        let mut nodes = Vec::new();
        loop {
            match self.next() {
                None => return Ok((nodes, Stop::Eof)),
                Some(Tok::Text(t)) => nodes.push(Node::Text(t)),
                Some(Tok::Open) => match self.peek().cloned() {
                    Some(Tok::Ident(k)) if matches!(k.as_str(), "if" | "with" | "range") => {
                        self.i += 1;
                        nodes.push(self.block(&k)?);
                    }
                    Some(Tok::Ident(k)) if k == "end" => {
                        let at = self.at();
                        self.i += 1;
                        self.expect_close()?;
                        return Ok((nodes, Stop::End(at)));
                    }
                    Some(Tok::Ident(k)) if k == "else" => {
                        let at = self.at();
                        self.i += 1;
                        let chained = match self.peek().cloned() {
                            Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                                self.i += 1;
                                let pipe = self.pipeline(0)?;
                                Some((k, pipe))
                            }
                            _ => {
                                self.expect_close()?;
                                None
                            }
                        };
                        return Ok((nodes, Stop::Else(at, chained)));
                    }
                    Some(Tok::Ident(k))
                        if matches!(k.as_str(), "define" | "template" | "block" | "break" | "continue") =>
                    {
                        return Err(self.err_at(format!("{{{{{k}}}}} is not supported")));
                    }
                    _ => nodes.push(Node::Action(self.pipeline(0)?)),
                },
                Some(_) => return Err(self.err_prev("unexpected token")),
            }
        }
    }

    fn block(&mut self, kind: &str) -> Result<Node, Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(format!("blocks nested deeper than {MAX_DEPTH}")));
        }
        let pipe = self.pipeline(0)?;
        let node = self.block_body(kind, pipe)?;
        self.depth -= 1;
        Ok(node)
    }

    fn block_body(&mut self, kind: &str, pipe: Pipe) -> Result<Node, Error> {
        let (then, end) = self.list()?;
        let otherwise = match end {
            Stop::Eof => return Err(self.err_at(format!("{{{{{kind}}}}} without {{{{end}}}}"))),
            Stop::End(_) => Vec::new(),
            Stop::Else(_, None) => match self.list()? {
                (nodes, Stop::End(_)) => nodes,
                (_, Stop::Eof) => return Err(self.err_at(format!("{{{{{kind}}}}} without {{{{end}}}}"))),
                (_, Stop::Else(at, _)) => return Err(parse_error(self.src, at, "a second {{else}}")),
            },
            // `{{else if …}}` / `{{else with …}}`: a nested block sharing this {{end}}.
            Stop::Else(_, Some((k, p))) => vec![self.block_body(&k, p)?],
        };
        Ok(match kind {
            "if" => Node::If { pipe, then, otherwise },
            "with" => Node::With { pipe, then, otherwise },
            _ => Node::Range { pipe, body: then, otherwise },
        })
    }

    /// A pipeline up to the close of the action (`parens` = 0) or of a
    /// parenthesised pipeline.
    fn pipeline(&mut self, parens: usize) -> Result<Pipe, Error> {
        if parens > MAX_DEPTH {
            return Err(self.err_at(format!("parentheses nested deeper than {MAX_DEPTH}")));
        }
        let mut decl = Vec::new();
        // `$x :=`, `$k, $v :=`, `$x =`
        let save = self.i;
        let mut vars = Vec::new();
        while let Some(Tok::Var(name, fields)) = self.peek().cloned() {
            if !fields.is_empty() {
                break;
            }
            self.i += 1;
            vars.push(name);
            match self.peek() {
                Some(Tok::Comma) if vars.len() == 1 => self.i += 1,
                Some(Tok::Declare | Tok::Assign) => {
                    self.i += 1;
                    decl = std::mem::take(&mut vars);
                    break;
                }
                _ => break,
            }
        }
        if decl.is_empty() {
            self.i = save;
        }
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        loop {
            match self.peek().cloned() {
                Some(Tok::Close) if parens == 0 => {
                    self.i += 1;
                    break;
                }
                Some(Tok::RParen(_)) if parens > 0 => break,
                Some(Tok::Pipe) => {
                    self.i += 1;
                    if cmd.is_empty() {
                        return Err(self.err_prev("missing command before |"));
                    }
                    cmds.push(std::mem::take(&mut cmd));
                }
                Some(Tok::LParen) => {
                    self.i += 1;
                    let inner = self.pipeline(parens + 1)?;
                    let Some(Tok::RParen(fields)) = self.next() else {
                        return Err(self.err_prev("unclosed parenthesis"));
                    };
                    cmd.push(Arg::Sub(Box::new(inner), fields));
                }
                Some(Tok::Field(f)) => {
                    self.i += 1;
                    cmd.push(Arg::Field(f));
                }
                Some(Tok::Var(n, f)) => {
                    self.i += 1;
                    cmd.push(Arg::Var(n, f));
                }
                Some(Tok::Str(s)) => {
                    self.i += 1;
                    cmd.push(Arg::Str(s));
                }
                Some(Tok::Num(n)) => {
                    self.i += 1;
                    cmd.push(Arg::Num(n));
                }
                Some(Tok::Ident(w)) => {
                    self.i += 1;
                    cmd.push(match w.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "nil" => Arg::Nil,
                        _ if is_function(&w) => Arg::Func(w),
                        _ => return Err(self.err_prev(format!("function {w:?} not defined"))),
                    });
                }
                None => return Err(self.err_at("unclosed action")),
                Some(_) => return Err(self.err_at("unexpected token in a pipeline")),
            }
        }
        if cmd.is_empty() {
            return Err(self.err_prev(if cmds.is_empty() { "missing value" } else { "missing command after |" }));
        }
        cmds.push(cmd);
        Ok(Pipe { decl, cmds })
    }
}

// ------------------------------------------------------------ evaluation

/// A value during evaluation: JSON from a secret, a number of the template
/// itself, or Go's "no value" (a missing map key). The two kinds of number
/// differ as in Go: a secret's numbers are `json.Number` (a string type: it
/// prints as written, `%d` refuses it, it compares as text and not with
/// the template's `int`s), the template's literals and `len` are `int`s.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Json(Value),
    Int(Value),
    NoValue,
}

impl Val {
    fn json(&self) -> &Value {
        match self {
            Val::Json(v) | Val::Int(v) => v,
            Val::NoValue => &Value::Null,
        }
    }

    fn truthy(&self) -> bool {
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
struct Text(String);

impl Text {
    fn room(&self, n: usize) -> Result<(), Error> {
        if self.0.len().saturating_add(n) > MAX_OUTPUT {
            return Err(exec_err(format!("a text longer than {MAX_OUTPUT} bytes")));
        }
        Ok(())
    }

    fn push(&mut self, t: &str) -> Result<(), Error> {
        self.room(t.len())?;
        self.0.push_str(t);
        Ok(())
    }

    fn push_char(&mut self, c: char) -> Result<(), Error> {
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

fn too_long() -> Error {
    exec_err(format!("a text longer than {MAX_OUTPUT} bytes"))
}

fn write_go(out: &mut Text, v: &Value) -> Result<(), Error> {
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

struct Exec<'r> {
    resolver: &'r mut dyn Resolver,
    /// A missing map key is an error (`missingkey=error`).
    strict: bool,
    vars: Vec<(String, Val)>,
    steps: u64,
    out: Text,
}

impl Template {
    /// Runs the template with `data` as `.` and `$`.
    ///
    /// # Errors
    /// [`Error::Exec`] naming the function or field, or a limit.
    pub fn render(&self, data: &Value, resolver: &mut dyn Resolver) -> Result<String, Error> {
        self.render_with(data, resolver, false)
    }

    /// Like [`Template::render`]; with `missing_key_error` a field that a
    /// map does not have is an error, as Go's `missingkey=error` (Vault
    /// Agent's `error_on_missing_key`).
    ///
    /// # Errors
    /// As [`Template::render`], and the missing key.
    pub fn render_with(
        &self,
        data: &Value,
        resolver: &mut dyn Resolver,
        missing_key_error: bool,
    ) -> Result<String, Error> {
        let mut ex = Exec {
            resolver,
            strict: missing_key_error,
            vars: vec![("$".into(), Val::Json(data.clone()))],
            steps: 0,
            out: Text::default(),
        };
        ex.nodes(&self.nodes, &Val::Json(data.clone()))?;
        Ok(ex.out.0)
    }
}

fn exec_err(msg: impl Into<String>) -> Error {
    Error::Exec(msg.into())
}

fn output_too_long() -> Error {
    exec_err(format!("output longer than {MAX_OUTPUT} bytes"))
}

impl Exec<'_> {
    fn step(&mut self) -> Result<(), Error> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(exec_err(format!("more than {MAX_STEPS} steps")));
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> Result<(), Error> {
        for n in nodes {
            self.step()?;
            match n {
                Node::Text(t) => self.out.push(t).map_err(|_| output_too_long())?,
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.decl.is_empty() {
                        match &v {
                            Val::NoValue => self.out.push("<no value>"),
                            Val::Json(j) | Val::Int(j) => write_go(&mut self.out, j),
                        }
                        .map_err(|_| output_too_long())?;
                    }
                }
                Node::If { pipe, then, otherwise } => {
                    let mark = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    let r = if v.truthy() { self.nodes(then, dot) } else { self.nodes(otherwise, dot) };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::With { pipe, then, otherwise } => {
                    let mark = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    let r = if v.truthy() { self.nodes(then, &v) } else { self.nodes(otherwise, dot) };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Range { pipe, body, otherwise } => self.range(pipe, body, otherwise, dot)?,
            }
        }
        Ok(())
    }

    fn range(&mut self, pipe: &Pipe, body: &[Node], otherwise: &[Node], dot: &Val) -> Result<(), Error> {
        let mark = self.vars.len();
        let plain = Pipe { decl: Vec::new(), cmds: pipe.cmds.clone() };
        let v = self.pipe(&plain, dot)?;
        // (key, element), made one at a time (a count is not a list: `range
        // 1000000000` must run into the step limit, not allocate); list
        // indexes and counts are ints, map keys strings.
        let int = |i: u64| Val::Int(Value::from(i));
        let r = match v.json() {
            Value::Array(a) => {
                self.each(pipe, body, dot, otherwise, a.len(), |i| (int(i as u64), Val::Json(a[i].clone())))
            }
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                let item = |i: usize| (Val::Json(Value::String(keys[i].clone())), Val::Json(o[keys[i]].clone()));
                self.each(pipe, body, dot, otherwise, keys.len(), item)
            }
            Value::Null => self.nodes(otherwise, dot),
            Value::Number(n) if matches!(v, Val::Int(_)) && n.as_u64().is_some() => {
                let count = usize::try_from(n.as_u64().unwrap_or(0)).unwrap_or(usize::MAX);
                self.each(pipe, body, dot, otherwise, count, |i| (int(i as u64), int(i as u64)))
            }
            other => Err(exec_err(format!("range can't iterate over a {}", kind(other)))),
        };
        self.vars.truncate(mark);
        r
    }

    /// The body once per item `0..count` (`otherwise` when there is none).
    fn each(
        &mut self,
        pipe: &Pipe,
        body: &[Node],
        dot: &Val,
        otherwise: &[Node],
        count: usize,
        item: impl Fn(usize) -> (Val, Val),
    ) -> Result<(), Error> {
        if count == 0 {
            return self.nodes(otherwise, dot);
        }
        for i in 0..count {
            self.step()?;
            let (k, x) = item(i);
            let inner = self.vars.len();
            match pipe.decl.as_slice() {
                [] => {}
                [one] => self.vars.push((one.clone(), x.clone())),
                [key, val, ..] => {
                    self.vars.push((key.clone(), k));
                    self.vars.push((val.clone(), x.clone()));
                }
            }
            let r = self.nodes(body, &x);
            self.vars.truncate(inner);
            r?;
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &Val) -> Result<Val, Error> {
        let mut last: Option<Val> = None;
        for cmd in &p.cmds {
            self.step()?;
            last = Some(self.command(cmd, dot, last)?);
        }
        let v = last.unwrap_or(Val::NoValue);
        for name in &p.decl {
            match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                Some(slot) if p.decl.len() == 1 => slot.1 = v.clone(),
                _ => self.vars.push((name.clone(), v.clone())),
            }
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &[Arg], dot: &Val, piped: Option<Val>) -> Result<Val, Error> {
        match &cmd[0] {
            Arg::Func(name) => {
                let mut args = Vec::with_capacity(cmd.len());
                for a in &cmd[1..] {
                    args.push(self.arg(a, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                let v = self.call(name, args)?;
                // Values built from values (print $s $s, again and again)
                // are bounded like the output.
                if let Val::Json(Value::String(s)) = &v {
                    if s.len() > MAX_OUTPUT {
                        return Err(exec_err(format!("{name}: a value longer than {MAX_OUTPUT} bytes")));
                    }
                }
                Ok(v)
            }
            a if cmd.len() == 1 && piped.is_none() => self.arg(a, dot),
            _ => Err(exec_err("a value can't take arguments (only functions can)")),
        }
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, Error> {
        Ok(match a {
            Arg::Field(f) => fields(dot, f, self.strict)?,
            Arg::Var(name, f) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| exec_err(format!("undefined variable {name}")))?;
                fields(&v, f, self.strict)?
            }
            Arg::Str(s) => Val::Json(Value::String(s.clone())),
            Arg::Num(n) => Val::Int(Value::Number(n.clone())),
            Arg::Bool(b) => Val::Json(Value::Bool(*b)),
            Arg::Nil => Val::Json(Value::Null),
            Arg::Func(_) => self.command(std::slice::from_ref(a), dot, None)?,
            Arg::Sub(p, f) => {
                let v = self.pipe(p, dot)?;
                fields(&v, f, self.strict)?
            }
        })
    }
}

/// Follows `.a.b` from `v`; with `strict` (Go's `missingkey=error`) a
/// missing map key is an error instead of "no value".
fn fields(v: &Val, path: &[String], strict: bool) -> Result<Val, Error> {
    let mut cur = v.clone();
    for name in path {
        cur = match cur {
            Val::Json(Value::Object(o)) => match o.get(name) {
                Some(x) => Val::Json(x.clone()),
                None if strict => return Err(exec_err(format!("map has no entry for key {name:?}"))),
                None => Val::NoValue,
            },
            Val::Json(Value::Null) | Val::NoValue => {
                return Err(exec_err(format!("nil pointer evaluating .{name}")));
            }
            Val::Json(other) | Val::Int(other) => {
                return Err(exec_err(format!("can't evaluate field {name} in {}", kind(&other))));
            }
        };
    }
    Ok(cur)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// What consul-template's `pkiCert` shows of an issue's answer: the PEMs
/// `Cert`, `Key` and `CA` (each ending in a newline, as Go's
/// `pem.EncodeToMemory` writes them), `CAChain`, and `.Data` for the same.
fn pem_encoded(answer: &Value) -> Value {
    let data = &answer["Data"];
    let pem = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(|s| format!("{}\n", s.trim_end_matches('\n')));
    let ca = pem(&data["issuing_ca"]);
    let mut chain: Vec<String> = Vec::new();
    for c in ca.iter().cloned().chain(data["ca_chain"].as_array().into_iter().flatten().filter_map(pem)) {
        if !chain.contains(&c) {
            chain.push(c);
        }
    }
    let mut out = serde_json::json!({
        "Cert": pem(&data["certificate"]).unwrap_or_default(),
        "Key": pem(&data["private_key"]).unwrap_or_default(),
        "CA": ca.unwrap_or_default(),
        "CAChain": chain,
    });
    out["Data"] = out.clone();
    out
}

const FUNCTIONS: &[&str] = &[
    "and",
    "base64Decode",
    "base64Encode",
    "contains",
    "default",
    "env",
    "eq",
    "ge",
    "gt",
    "index",
    "join",
    "le",
    "len",
    "lower",
    "lt",
    "ne",
    "not",
    "or",
    "pkiCert",
    "print",
    "printf",
    "println",
    "replaceAll",
    "secret",
    "split",
    "toJSON",
    "toJSONPretty",
    "toLower",
    "toUpper",
    "trimSpace",
    "upper",
];

fn is_function(name: &str) -> bool {
    FUNCTIONS.binary_search(&name).is_ok()
}

/// `%v` of a value, as a function argument: bounded like every text.
fn string_of(v: &Val) -> Result<String, Error> {
    let mut out = Text::default();
    match v {
        Val::NoValue => out.push("<no value>")?,
        Val::Json(j) | Val::Int(j) => write_go(&mut out, j)?,
    }
    Ok(out.0)
}

fn arity(name: &str, args: &[Val], n: usize) -> Result<(), Error> {
    if args.len() == n { Ok(()) } else { Err(exec_err(format!("{name}: wants {n} argument(s), got {}", args.len()))) }
}

/// Go's comparison of two basic values: `int`s by value, strings and
/// `json.Number`s (a string type) as text, booleans for equality; other
/// pairs are incompatible.
fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
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

impl Exec<'_> {
    /// The functions: Go's builtins (`and`, `or`, `not`, `eq`…, `index`,
    /// `len`, `print*`), consul-template's (`secret`, `env`, `toJSON`,
    /// `toJSONPretty`, `base64Encode/Decode`, `toLower`, `toUpper`,
    /// `trimSpace`, `replaceAll`, `split`, `join`, `contains`) and sprig's
    /// common ones (`default`, `upper`, `lower`).
    fn call(&mut self, name: &str, args: Vec<Val>) -> Result<Val, Error> {
        let s = string_of;
        let json = |v: Value| Ok(Val::Json(v));
        let text = |t: Text| Ok(Val::Json(Value::String(t.0)));
        match name {
            "secret" | "pkiCert" => {
                let Some((path, rest)) = args.split_first() else {
                    return Err(exec_err(format!("{name}: wants a path")));
                };
                let mut kv = Vec::new();
                for (i, a) in rest.iter().enumerate() {
                    let text = s(a)?;
                    let (k, v) = text
                        .split_once('=')
                        .ok_or_else(|| exec_err(format!("{name}: argument {} is not k=v", i + 2)))?;
                    kv.push((k.to_owned(), v.to_owned()));
                }
                let path = s(path)?;
                let answer = self.resolver.secret(&path, &kv).map_err(|e| exec_err(format!("{name} {path:?}: {e}")))?;
                Ok(Val::Json(if name == "pkiCert" { pem_encoded(&answer) } else { answer }))
            }
            "env" => {
                arity(name, &args, 1)?;
                json(Value::String(self.resolver.env(&s(&args[0])?)))
            }
            "and" | "or" => {
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
            "not" => {
                arity(name, &args, 1)?;
                json(Value::Bool(!args[0].truthy()))
            }
            "eq" => {
                let Some((first, rest)) = args.split_first() else { return Err(exec_err("eq: wants arguments")) };
                let mut any = false;
                for o in rest {
                    any |= compare(first, o).ok_or_else(|| exec_err("eq: incompatible types for comparison"))?.is_eq();
                }
                json(Value::Bool(any))
            }
            "ne" => {
                arity(name, &args, 2)?;
                let o = compare(&args[0], &args[1]).ok_or_else(|| exec_err("ne: incompatible types for comparison"))?;
                json(Value::Bool(!o.is_eq()))
            }
            "lt" | "le" | "gt" | "ge" => {
                arity(name, &args, 2)?;
                let o = compare(&args[0], &args[1])
                    .ok_or_else(|| exec_err(format!("{name}: incompatible types for comparison")))?;
                let r = match name {
                    "lt" => o.is_lt(),
                    "le" => o.is_le(),
                    "gt" => o.is_gt(),
                    _ => o.is_ge(),
                };
                json(Value::Bool(r))
            }
            "index" => {
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
                        (c, key) => {
                            return Err(exec_err(format!("index: can't index {} with {}", kind(c), kind(key))));
                        }
                    };
                }
                json(cur)
            }
            "len" => {
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
            "print" | "println" => {
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
            "printf" => {
                let Some((format, rest)) = args.split_first() else { return Err(exec_err("printf: wants a format")) };
                text(printf(&s(format)?, rest)?)
            }
            "toJSON" => {
                arity(name, &args, 1)?;
                text(go_json(args[0].json(), false)?)
            }
            "toJSONPretty" => {
                arity(name, &args, 1)?;
                text(go_json(args[0].json(), true)?)
            }
            "base64Encode" => {
                arity(name, &args, 1)?;
                use base64::Engine;
                let plain = s(&args[0])?;
                Text::default().room(plain.len().div_ceil(3).saturating_mul(4))?;
                json(Value::String(base64::engine::general_purpose::STANDARD.encode(plain)))
            }
            "base64Decode" => {
                arity(name, &args, 1)?;
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s(&args[0])?.trim())
                    .map_err(|_| exec_err("base64Decode: not valid base64"))?;
                json(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            }
            "toLower" | "lower" | "toUpper" | "upper" => {
                arity(name, &args, 1)?;
                // A character may change into several (ß into SS): built one
                // at a time into bounded text.
                let mut out = Text::default();
                let upper = name.ends_with("pper");
                for c in s(&args[0])?.chars() {
                    if upper {
                        c.to_uppercase().try_for_each(|u| out.push_char(u))?;
                    } else {
                        c.to_lowercase().try_for_each(|l| out.push_char(l))?;
                    }
                }
                text(out)
            }
            "trimSpace" => {
                arity(name, &args, 1)?;
                json(Value::String(s(&args[0])?.trim().to_owned()))
            }
            "replaceAll" => {
                arity(name, &args, 3)?;
                let (old, new, within) = (s(&args[0])?, s(&args[1])?, s(&args[2])?);
                // The size is known before anything is built: Go inserts
                // `new` at every character boundary when `old` is empty.
                let n = if old.is_empty() { within.chars().count() + 1 } else { within.matches(old.as_str()).count() };
                let size = (within.len() - n * old.len()).saturating_add(n.saturating_mul(new.len()));
                if size > MAX_OUTPUT {
                    return Err(exec_err(format!("replaceAll: a text longer than {MAX_OUTPUT} bytes")));
                }
                json(Value::String(within.replace(&old, &new)))
            }
            "split" => {
                arity(name, &args, 2)?;
                let (sep, within) = (s(&args[0])?, s(&args[1])?);
                // Go splits after each character when `sep` is empty (and
                // an empty text into nothing).
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
            "join" => {
                arity(name, &args, 2)?;
                let Value::Array(list) = args[1].json() else {
                    return Err(exec_err(format!("join: wants a list, got {}", kind(args[1].json()))));
                };
                let sep = s(&args[0])?;
                let mut out = Text::default();
                for (i, x) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(&sep)?;
                    }
                    write_go(&mut out, x)?;
                }
                text(out)
            }
            "contains" => {
                arity(name, &args, 2)?;
                json(Value::Bool(s(&args[1])?.contains(&s(&args[0])?)))
            }
            "default" => {
                arity(name, &args, 2)?;
                Ok(if args[1].truthy() { args[1].clone() } else { args[0].clone() })
            }
            other => Err(exec_err(format!("function {other:?} not defined"))),
        }
    }
}

/// What serde_json writes, refused past [`MAX_OUTPUT`] as it is written.
fn bounded_json(write: impl FnOnce(&mut Bytes) -> serde_json::Result<()>) -> Result<String, Error> {
    let mut raw = Bytes(Vec::new());
    write(&mut raw).map_err(|_| too_long())?;
    String::from_utf8(raw.0).map_err(|_| exec_err("toJSON: not UTF-8"))
}

/// Bytes that refuse to grow past [`MAX_OUTPUT`].
struct Bytes(Vec<u8>);

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
fn go_json(v: &Value, pretty: bool) -> Result<Text, Error> {
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

/// `printf` with the verbs templates use: `%s`, `%v`, `%d`, `%q`, `%%`.
fn printf(format: &str, args: &[Val]) -> Result<Text, Error> {
    let mut out = Text::default();
    let mut args = args.iter();
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
    Ok(out)
}

#[cfg(test)]
mod tests;
