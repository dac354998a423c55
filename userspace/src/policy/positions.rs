//! Where every key and value of a YAML file starts, by field path.
//!
//! yaml_serde reports positions only for its own (structural) errors. The
//! semantic checks need the position of any leaf, e.g.
//! `groups.meters.rules[2].allow.ports[1]`, and every rule needs its line for
//! counters and `explain`. This module walks the event stream of libyaml-rs
//! (the parser yaml_serde itself uses, so positions agree) once per file and
//! records the start of every key and value under the path syntax yaml_serde
//! prints. It also finds duplicate mapping keys, which serde would silently
//! collapse into one entry. For a policy file this walk is the only parse:
//! `tree` keeps the same events as the document it deserialises
//! (`Positions::index_with`).
//!
//! Lists of cloud ranges run to 10^5 items, so sequence items cost no
//! string: their starts are kept in one vector per sequence, and only
//! mapping keys' text is copied into the index (the events lend the rest
//! from the file's text where it is written as is).
//!
//! The same walk bounds what a file may be, before anything else reads it
//! ([`Positions::problems`]): nesting deeper than [`MAX_NESTING`] stops the
//! walk; anchors and aliases are refused (an alias repeats a subtree, so a
//! small file could stand for gigabytes); and a plain value that YAML reads
//! as a non-decimal number (`0x1bb`, `443.0`, `1e3`, `+22`, `0443`) is an
//! error, since it would silently become another number.

use foldhash::HashMap;

/// Collections nested deeper than this are refused. Policies need five
/// levels (`groups.NAME.rules[i].allow.to[j]`).
pub const MAX_NESTING: usize = 64;

/// At most this many problems are reported per file.
const MAX_PROBLEMS: usize = 20;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

/// A key that appears twice in one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Path of the second occurrence.
    pub path: String,
    pub first: Mark,
    pub second: Mark,
}

/// The positions of one file.
#[derive(Debug, Default)]
pub struct Positions {
    /// Values that are not sequence items, and the sequences' own starts.
    values: HashMap<String, Mark>,
    /// The start of every item of each sequence, by the sequence's path.
    items: HashMap<String, Vec<Mark>>,
    keys: HashMap<String, Mark>,
    duplicates: Vec<DuplicateKey>,
    /// What makes the file unacceptable whatever it means, in order: where,
    /// the field path (empty when not about one value), and why.
    problems: Vec<(Mark, String, String)>,
    /// The walk stopped early (nesting too deep): nothing else may parse it.
    aborted: bool,
    /// The file uses anchors or aliases: nothing else may parse it.
    aliased: bool,
    has_nodes: bool,
    ended: bool,
}

impl Positions {
    /// Indexes `text`. A syntax error stops the walk; what came before it is
    /// kept (yaml_serde reports the error itself).
    pub fn index(text: &str) -> Positions {
        Positions::index_with(text, |_| {})
    }

    /// [`Positions::index`], handing every event the walk accepts to
    /// `observer` as well (the walk is the one parse of a policy file).
    pub(in crate::policy) fn index_with<'a>(
        text: &'a str,
        mut observer: impl FnMut(events::Event<'a>),
    ) -> Positions {
        let mut walk = Walk::default();
        let mut parser = events::Parser::new(text);
        while let Some((event, mark)) = parser.next() {
            walk.event(&event, mark);
            if walk.positions.aborted {
                break;
            }
            observer(event);
        }
        // After a syntax error, sequences still open keep their items.
        while !walk.stack.is_empty() {
            walk.close();
        }
        walk.positions
    }

    /// The start of the value at exactly `path`, if recorded.
    fn lookup(&self, path: &str) -> Option<Mark> {
        if let Some(mark) = self.values.get(path) {
            return Some(*mark);
        }
        let open = path.strip_suffix(']')?.rfind('[')?;
        let index: usize = path[open + 1..path.len() - 1].parse().ok()?;
        self.items.get(&path[..open])?.get(index).copied()
    }

    /// Where each item of the sequence at `path` starts, if recorded: one
    /// lookup for a list of 10^4 devices, not one per item.
    pub fn items(&self, path: &str) -> Option<&[Mark]> {
        self.items.get(path).map(Vec::as_slice)
    }

    /// Where the value at `path` starts. A path with no recorded value (from
    /// an alias or a merge) falls back to its nearest recorded ancestor.
    pub fn value(&self, path: &str) -> Mark {
        let mut path = path;
        loop {
            if let Some(mark) = self.lookup(path) {
                return mark;
            }
            match parent(path) {
                Some(p) => path = p,
                None => return Mark { line: 1, column: 1 },
            }
        }
    }

    /// Where the key naming the value at `path` starts (the value's own start
    /// for sequence items and the root).
    pub fn key(&self, path: &str) -> Mark {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }

    pub fn duplicate_keys(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// Depth, anchors and aliases, non-decimal numbers: see the module doc.
    pub fn problems(&self) -> &[(Mark, String, String)] {
        &self.problems
    }

    /// Whether the file must not be deserialised at all: too deep, or with
    /// aliases that could expand to anything.
    pub fn refuses_parsing(&self) -> bool {
        self.aborted || self.aliased
    }

    /// True for a well-formed file with nothing but comments and blank
    /// lines (which yaml_serde would not accept as a mapping).
    pub fn is_blank(&self) -> bool {
        self.ended && !self.has_nodes
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']')
        && let Some(open) = path.rfind('[')
    {
        return Some(&path[..open]);
    }
    Some(path.rfind('.').map_or("", |dot| &path[..dot]))
}

fn child_of_map(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The walk's state: one frame per open collection.
#[derive(Default)]
struct Walk {
    positions: Positions,
    stack: Vec<Frame>,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while expecting a key.
        key: Option<String>,
        seen: HashMap<String, Mark>,
    },
    Seq {
        path: String,
        /// Where each item starts.
        items: Vec<Mark>,
    },
    /// A collection used as a mapping key: its contents have no path.
    Ignored,
}

impl Walk {
    fn problem(&mut self, mark: Mark, field: String, message: String) {
        if self.positions.problems.len() < MAX_PROBLEMS {
            self.positions.problems.push((mark, field, message));
        }
    }

    /// The path the next value node gets (for messages only: it allocates).
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => {
                child_of_map(path, key.as_deref().unwrap_or_default())
            }
            Some(Frame::Seq { path, items }) => format!("{path}[{}]", items.len()),
            Some(Frame::Ignored) => String::new(),
        }
    }

    fn refuse_alias(&mut self, mark: Mark) {
        self.positions.aliased = true;
        self.problem(
            mark,
            String::new(),
            "anchors and aliases (&name, *name) are not allowed in policy files: write \
             the value out, or put shared prefixes in a list under `lists:`"
                .into(),
        );
    }

    fn event(&mut self, event: &events::Event, mark: Mark) {
        use events::Event;
        let anchored = match event {
            Event::Scalar { anchored, .. }
            | Event::SequenceStart { anchored, .. }
            | Event::MappingStart { anchored, .. } => *anchored,
            _ => false,
        };
        if anchored {
            self.refuse_alias(mark);
        }
        match event {
            Event::Scalar { text, plain, .. } => {
                if self.take_key(Some(text), mark) {
                    return;
                }
                if *plain && is_non_decimal_number(text.as_bytes()) {
                    let written = crate::diagnostic::quote(text);
                    let field = self.next_path();
                    self.problem(
                        mark,
                        field,
                        format!(
                            "{written} is not a decimal integer: YAML would read it as another \
                             number; write numbers (ports, protocols) in plain decimal, e.g. 443"
                        ),
                    );
                }
                self.node(mark, false);
            }
            Event::Alias => {
                self.refuse_alias(mark);
                if !self.take_key(None, mark) {
                    self.node(mark, false);
                }
            }
            Event::SequenceStart { .. } | Event::MappingStart { .. } => {
                if self.stack.len() >= MAX_NESTING {
                    self.problem(
                        mark,
                        String::new(),
                        format!(
                            "nested more than {MAX_NESTING} levels deep; a policy needs about five"
                        ),
                    );
                    self.positions.aborted = true;
                    return;
                }
                let frame = if self.take_key(None, mark) {
                    Frame::Ignored
                } else {
                    match self.node(mark, true) {
                        Some(path) if matches!(event, Event::MappingStart { .. }) => Frame::Map {
                            path,
                            key: None,
                            seen: HashMap::default(),
                        },
                        Some(path) => Frame::Seq {
                            path,
                            items: Vec::new(),
                        },
                        None => Frame::Ignored,
                    }
                };
                self.stack.push(frame);
            }
            Event::CollectionEnd => self.close(),
            Event::StreamEnd => self.positions.ended = true,
            Event::DocumentStart | Event::Other => {}
        }
    }

    /// If the innermost open collection is a mapping waiting for a key, the
    /// node starting at `mark` is that key: records it and returns true.
    /// A non-scalar key (`text` is `None`) is accepted but has no name.
    fn take_key(&mut self, text: Option<&str>, mark: Mark) -> bool {
        let Some(Frame::Map { path, key, seen }) = self.stack.last_mut() else {
            return false;
        };
        if key.is_some() {
            return false;
        }
        let name = text.unwrap_or("?").to_string();
        let full = child_of_map(path, &name);
        if let Some(first) = seen.get(&name) {
            self.positions.duplicates.push(DuplicateKey {
                path: full.clone(),
                first: *first,
                second: mark,
            });
        } else {
            seen.insert(name.clone(), mark);
        }
        self.positions.keys.entry(full).or_insert(mark);
        *key = Some(name);
        true
    }

    /// Ends the innermost collection; a sequence hands over its items (the
    /// first sequence at a path wins, as for values).
    fn close(&mut self) {
        if let Some(Frame::Seq { path, items }) = self.stack.pop() {
            self.positions.items.entry(path).or_insert(items);
        }
    }

    /// Records a value node starting at `mark`. Returns the path of a
    /// `collection`, whose frame needs it (`None` inside a collection used
    /// as a key).
    fn node(&mut self, mark: Mark, collection: bool) -> Option<String> {
        self.positions.has_nodes = true;
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => {
                let key = key.take().unwrap_or_default();
                child_of_map(path, &key)
            }
            Some(Frame::Seq { path, items }) => {
                items.push(mark);
                return collection.then(|| format!("{path}[{}]", items.len() - 1));
            }
            Some(Frame::Ignored) => return None,
        };
        self.positions.values.entry(path.clone()).or_insert(mark);
        Some(path)
    }
}

/// Whether a plain scalar is a number to YAML (the 1.2 core schema that
/// yaml_serde resolves with) without being a plain decimal integer: hex,
/// octal, binary, a float, an exponent, `.inf`/`.nan`, a leading `+` or a
/// leading zero.
fn is_non_decimal_number(text: &[u8]) -> bool {
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    if digits(unsigned) {
        return unsigned.len() > 1 && unsigned[0] == b'0';
    }
    let rest = text.strip_prefix(b"+").unwrap_or(text);
    if rest.len() < text.len() && digits(rest) {
        return true;
    }
    let lower = rest.to_ascii_lowercase();
    for (prefix, valid) in [
        (&b"0x"[..], u8::is_ascii_hexdigit as fn(&u8) -> bool),
        (b"0o", |c: &u8| (b'0'..=b'7').contains(c)),
        (b"0b", |c: &u8| *c == b'0' || *c == b'1'),
    ] {
        if let Some(body) = lower.strip_prefix(prefix) {
            return !body.is_empty() && body.iter().all(valid);
        }
    }
    let unsigned = lower.strip_prefix(b"-").unwrap_or(&lower);
    if matches!(unsigned, b".inf" | b".nan") {
        return true;
    }
    // [0-9]* ( . [0-9]* )? ( e [+-]? [0-9]+ )?, with a digit somewhere
    // before the exponent and a dot or an exponent present.
    let (mantissa, exponent) = match unsigned.iter().position(|c| *c == b'e') {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.iter().position(|c| *c == b'.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let all_digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let mantissa_ok = all_digits(whole)
        && fraction.is_none_or(all_digits)
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()));
    let exponent_ok =
        exponent.is_none_or(|e| digits(e.strip_prefix(b"+").or(e.strip_prefix(b"-")).unwrap_or(e)));
    mantissa_ok && exponent_ok && (fraction.is_some() || exponent.is_some())
}

/// A safe event iterator over libyaml-rs, which is a C translation with a
/// raw-pointer API; `tree` keeps what it needs of the same events.
pub(in crate::policy) mod events;

#[cfg(test)]
mod tests;
