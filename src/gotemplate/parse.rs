//! Tokens into nodes (Go's `text/template/parse/parse.go`): blocks with
//! `else`/`else if`, pipelines, declarations, parentheses; nesting bounded
//! by [`MAX_DEPTH`].

use super::funcs;
use super::lex::{Lexer, Tok, parse_error};
use super::node::{Arg, Node, Pipe};
use super::{Error, MAX_DEPTH, MAX_TEMPLATE, Template};

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
                        _ if funcs::lookup(&w).is_some() => Arg::Func(w),
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
