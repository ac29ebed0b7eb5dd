//! The parsed template: text and actions, blocks, pipelines and their
//! arguments (Go's `text/template/parse/node.go`).

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If { pipe: Pipe, then: Vec<Node>, otherwise: Vec<Node> },
    With { pipe: Pipe, then: Vec<Node>, otherwise: Vec<Node> },
    Range { pipe: Pipe, body: Vec<Node>, otherwise: Vec<Node> },
}

/// A pipeline: `$x := a b | c`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pipe {
    /// Variables declared (`$x :=`, `$k, $v :=`) or assigned (`$x =`).
    pub decl: Vec<String>,
    pub cmds: Vec<Vec<Arg>>,
}

/// One word of a command.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
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
