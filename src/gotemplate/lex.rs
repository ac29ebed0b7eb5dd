//! Text and actions into tokens (Go's `text/template/parse/lex.go`):
//! delimiters, trim markers, comments, strings, numbers, fields and
//! variables, each with its byte offset for error positions.

use super::Error;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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

pub(super) struct Lexer<'a> {
    pub src: &'a str,
    pub pos: usize,
    pub left: &'a str,
    pub right: &'a str,
    pub toks: Vec<(Tok, usize)>,
}

fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) fn parse_error(src: &str, at: usize, reason: impl Into<String>) -> Error {
    let (line, col) = position(src, at);
    Error::Parse { line, col, reason: reason.into() }
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, reason: impl Into<String>) -> Error {
        parse_error(self.src, at, reason)
    }

    pub fn run(mut self) -> Result<Vec<(Tok, usize)>, Error> {
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
