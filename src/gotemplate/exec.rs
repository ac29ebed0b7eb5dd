//! Running a template (Go's `text/template/exec.go`): nodes over values,
//! variables and their scopes, `range` one item at a time, every step
//! counted against [`MAX_STEPS`] and the output against [`MAX_OUTPUT`].

use serde_json::Value;

use super::node::{Arg, Node, Pipe};
use super::value::{Text, Val, kind, write_go};
use super::{Error, MAX_OUTPUT, MAX_STEPS, Resolver, Template, funcs};

/// One run of a template: the resolver, the variables in scope, the
/// steps taken and the output so far.
pub(super) struct Exec<'r> {
    pub resolver: &'r mut dyn Resolver,
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

pub(super) fn exec_err(msg: impl Into<String>) -> Error {
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
                let f = funcs::lookup(name).ok_or_else(|| exec_err(format!("function {name:?} not defined")))?;
                let v = f(self, name, args)?;
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
