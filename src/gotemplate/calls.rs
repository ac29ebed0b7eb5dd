//! The `secret` and `pkiCert` calls of a template, found without running
//! it: what the agent must read or write before it can render, and what
//! the injector's policy judges.

use std::collections::HashSet;

use super::exec::exec_err;
use super::node::{Arg, Node, Pipe};
use super::{Error, MAX_CALLS, Template};

impl Template {
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
    seen: HashSet<SecretCall>,
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
