//! Where the nodes of a YAML stream are in its text: one walk over the
//! parser's events, for the migrations that edit a manifest in place
//! (comments, key order and layout kept) instead of writing it anew.
//!
//! Nodes are named by the JSON pointer of the value they belong to, as the
//! documents [`super::parse_documents`] returns have them; documents are
//! counted as it counts them (an empty document has no entry).

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// What a located node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A mapping key; the pointer is its entry's.
    Key,
    /// A mapping. For a flow mapping (`{…}`), `flow_end` is the char index
    /// of its closing `}` when one was found.
    Mapping {
        /// Written `{…}`.
        flow: bool,
        /// The char index of the closing `}`.
        flow_end: Option<usize>,
    },
    /// An entry's empty plain value (`annotations:` with nothing after it,
    /// as Helm renders an empty block); `key_col` is its key's column.
    EmptyValue {
        /// The 0-based column of the entry's key.
        key_col: usize,
    },
    /// An alias as an entry's value (`labels: *l`): its char range.
    Alias {
        /// The char index of `*`.
        start: usize,
        /// The char index after the alias name.
        end: usize,
    },
}

/// One located node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The JSON pointer of the node (of its entry, for a key).
    pub pointer: String,
    /// 1-based line of its first character.
    pub line: usize,
    /// 0-based column of its first character.
    pub col: usize,
    /// What it is.
    pub kind: NodeKind,
}

/// The located nodes of one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentPositions {
    /// Keys, mappings, empty values and aliases, in the text's order.
    pub nodes: Vec<Located>,
    /// The char range from the start of the line where the document's root
    /// collection starts to where the document ends (what a rewrite of
    /// that one document replaces).
    pub range: (usize, usize),
}

/// Every document's located nodes. Work and memory are linear in the
/// text; at a syntax error the walk stops with the documents before it.
#[must_use]
pub fn positions(text: &str) -> Vec<DocumentPositions> {
    let mut w = Walker { chars: text.chars().collect(), ..Walker::default() };
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { break };
        match ev {
            Event::DocumentStart(_) => {
                w.in_doc = true;
                w.has_root = false;
                w.current = Vec::new();
                w.stack.clear();
            }
            Event::DocumentEnd => {
                if w.in_doc && w.has_root {
                    let nodes = std::mem::take(&mut w.current);
                    w.docs.push(DocumentPositions { nodes, range: (w.root_start, span.start.index()) });
                }
                w.in_doc = false;
            }
            Event::MappingStart(..) => {
                let pointer = w.node_start(&span);
                let flow = w.chars.get(span.start.index()).is_some_and(|c| *c == '{');
                w.stack.push(Frame::Map { key: None, key_col: 0, pointer: pointer.clone(), at: w.current.len() });
                w.push(pointer, &span, NodeKind::Mapping { flow, flow_end: None });
            }
            Event::SequenceStart(..) => {
                let pointer = w.node_start(&span);
                w.stack.push(Frame::Seq { index: 0, pointer });
            }
            Event::MappingEnd | Event::SequenceEnd => w.collection_end(&span),
            Event::Scalar(v, style, ..) => w.scalar(&v, style, &span),
            Event::Alias(_) => w.alias(&span),
            _ => {}
        }
    }
    w.docs
}

enum Frame {
    /// `at`: the index of the mapping's own node in the document's list.
    Map {
        key: Option<String>,
        key_col: usize,
        pointer: String,
        at: usize,
    },
    Seq {
        index: usize,
        pointer: String,
    },
}

/// `token` as one JSON-pointer reference token (`~` → `~0`, `/` → `~1`).
fn escape(token: &str) -> String {
    json_patch::jsonptr::Token::new(token).encoded().to_owned()
}

/// The state of [`positions`]' walk over the parser's events.
#[derive(Default)]
struct Walker {
    chars: Vec<char>,
    docs: Vec<DocumentPositions>,
    root_start: usize,
    current: Vec<Located>,
    stack: Vec<Frame>,
    in_doc: bool,
    /// `parse_documents` drops empty documents: keep the two lists aligned.
    has_root: bool,
}

impl Walker {
    fn push(&mut self, pointer: String, span: &Span, kind: NodeKind) {
        self.current.push(Located { pointer, line: span.start.line(), col: span.start.col(), kind });
    }

    /// The pointer the next node gets, from its parent.
    fn child_pointer(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { key, pointer, .. }) => format!("{pointer}/{}", escape(key.as_deref().unwrap_or(""))),
            Some(Frame::Seq { index, pointer }) => {
                let p = format!("{pointer}/{index}");
                *index += 1;
                p
            }
        }
    }

    /// A mapping or sequence starts: its pointer (a root also marks where
    /// the document's text starts).
    fn node_start(&mut self, span: &Span) -> String {
        if self.stack.is_empty() {
            let at = span.start.index().min(self.chars.len());
            self.root_start = self.chars[..at].iter().rposition(|c| *c == '\n').map_or(0, |i| i + 1);
        }
        self.has_root = true;
        self.child_pointer()
    }

    fn collection_end(&mut self, span: &Span) {
        if let Some(Frame::Map { at, .. }) = self.stack.last()
            && let Some(Located { kind: NodeKind::Mapping { flow: true, flow_end }, .. }) = self.current.get_mut(*at)
        {
            // A flow mapping ends at its `}` (after a trailing comma, the
            // span may start before it).
            let from = span.start.index();
            let chars = &self.chars;
            let end = chars.iter().skip(from).position(|c| !c.is_whitespace() && *c != ',').map(|i| from + i);
            *flow_end = end.filter(|e| chars.get(*e) == Some(&'}'));
        }
        self.stack.pop();
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }

    fn scalar(&mut self, v: &str, style: ScalarStyle, span: &Span) {
        let plain = style == ScalarStyle::Plain;
        if self.stack.is_empty() && !(plain && super::resolve_plain(v).is_null()) {
            self.has_root = true;
        }
        let mut located = None;
        match self.stack.last_mut() {
            Some(Frame::Map { key, key_col, pointer, .. }) if key.is_none() => {
                located = Some((format!("{pointer}/{}", escape(v)), NodeKind::Key));
                *key = Some(v.to_owned());
                *key_col = span.start.col();
            }
            Some(Frame::Map { key, key_col, pointer, .. }) => {
                if plain && v.is_empty() {
                    let k = key.as_deref().unwrap_or_default();
                    located = Some((format!("{pointer}/{}", escape(k)), NodeKind::EmptyValue { key_col: *key_col }));
                }
                *key = None;
            }
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
        if let Some((pointer, kind)) = located {
            self.push(pointer, span, kind);
        }
    }

    fn alias(&mut self, span: &Span) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, pointer, .. }) => {
                if let Some(k) = key.take() {
                    let pointer = format!("{pointer}/{}", escape(&k));
                    let kind = NodeKind::Alias { start: span.start.index(), end: span.end.index() };
                    self.push(pointer, span, kind);
                }
            }
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(doc: &DocumentPositions) -> Vec<(&str, usize, usize, NodeKind)> {
        doc.nodes.iter().map(|n| (n.pointer.as_str(), n.line, n.col, n.kind)).collect()
    }

    #[test]
    fn names_keys_mappings_empty_values_and_aliases_by_pointer() {
        let text = "z: &x 1\na:\n  b: {c: 1, }\n  e:\n  f: *x\n  g/h: [1, {i: 2}]\n";
        let docs = positions(text);
        assert_eq!(docs.len(), 1);
        let flow_end = text.find('}').unwrap();
        let alias = text.find('*').unwrap();
        assert_eq!(
            kinds(&docs[0]),
            vec![
                ("", 1, 0, NodeKind::Mapping { flow: false, flow_end: None }),
                ("/z", 1, 0, NodeKind::Key),
                ("/a", 2, 0, NodeKind::Key),
                ("/a", 3, 2, NodeKind::Mapping { flow: false, flow_end: None }),
                ("/a/b", 3, 2, NodeKind::Key),
                ("/a/b", 3, 5, NodeKind::Mapping { flow: true, flow_end: Some(flow_end) }),
                ("/a/b/c", 3, 6, NodeKind::Key),
                ("/a/e", 4, 2, NodeKind::Key),
                ("/a/e", 4, 3, NodeKind::EmptyValue { key_col: 2 }),
                ("/a/f", 5, 2, NodeKind::Key),
                ("/a/f", 5, 5, NodeKind::Alias { start: alias, end: alias + 2 }),
                ("/a/g~1h", 6, 2, NodeKind::Key),
                ("/a/g~1h/1", 6, 11, NodeKind::Mapping { flow: true, flow_end: Some(text.rfind('}').unwrap()) }),
                ("/a/g~1h/1/i", 6, 12, NodeKind::Key),
            ]
        );
        assert_eq!(docs[0].range, (0, text.chars().count()));
    }

    #[test]
    fn counts_documents_as_parse_documents_does() {
        let text = "---\n---\n# only a comment\n---\nkind: A\n---\n~\n---\n  kind: B\n";
        let docs = positions(text);
        assert_eq!(docs.len(), super::super::parse_documents(text).unwrap().len());
        assert_eq!(docs.len(), 2);
        let b = text.find("  kind: B").unwrap();
        assert_eq!(docs[1].range, (b, text.chars().count()));
        assert_eq!(docs[1].nodes[1].pointer, "/kind");
    }

    #[test]
    fn stops_at_a_syntax_error_with_the_documents_before_it() {
        let docs = positions("a: 1\n---\nb: [\n");
        assert_eq!(docs.len(), 1);
    }
}
