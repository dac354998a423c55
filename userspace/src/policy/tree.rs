//! The one parse of a policy file: the [`Positions`] walk also keeps the
//! document as a compact node tree, which [`deserialize`] reads into the
//! file's spec the way yaml_serde would, so the text goes through libyaml
//! once instead of twice (issue 14: a one-line edit of a fleet file used to
//! parse its 10⁴ devices and 10³ rules twice).
//!
//! The tree keeps only what deserialising needs: a scalar's text (a slice of
//! the file when it is written there as is, else a copy) and whether it is
//! plain; collections are their start and end. No marks: positions live in
//! [`Positions`], and errors are not this module's to word.
//!
//! Whatever this reader does not decide exactly as yaml_serde would — a
//! syntax error, a second document, a tag, an alias, a plain scalar that
//! may be a number other than a decimal integer, and every error — comes
//! back as `de::Undecided`; `parse` then hands the text to yaml_serde, whose
//! messages the diagnostics have always been. A valid file is parsed once;
//! an invalid one twice, as before.

use std::borrow::Cow;

use super::positions::{Positions, events::Event};

/// One node of a document, in document order: a collection's nodes follow
/// its start, and [`Node::End`] closes it.
#[derive(Debug)]
enum Node<'a> {
    /// An unquoted scalar: its type depends on its text and on what the
    /// deserialiser asks for (`443` is a number or a string).
    Plain(Cow<'a, str>),
    /// A quoted or block scalar: always a string.
    Quoted(Cow<'a, str>),
    SeqStart,
    MapStart,
    End,
}

/// A document yaml_serde would deserialise from the same events.
pub(super) struct Tree<'a> {
    nodes: Vec<Node<'a>>,
}

/// Indexes `text` and, in the same walk, builds its tree; `None` when the
/// walk shows that only yaml_serde can say what the text means (see the
/// module doc), or when nothing may read it at all
/// ([`Positions::refuses_parsing`]).
pub(super) fn read(text: &str) -> (Positions, Option<Tree<'_>>) {
    let mut builder = Builder::default();
    let positions = Positions::index_with(text, |event| builder.push(event));
    let decidable = builder.ended && builder.documents <= 1 && !builder.exotic;
    let tree = (decidable && !positions.refuses_parsing()).then_some(Tree {
        nodes: builder.nodes,
    });
    (positions, tree)
}

#[derive(Default)]
struct Builder<'a> {
    nodes: Vec<Node<'a>>,
    documents: usize,
    /// The stream ended without a syntax error.
    ended: bool,
    /// A tag or an alias: yaml_serde gives them meanings of its own.
    exotic: bool,
}

impl<'a> Builder<'a> {
    fn push(&mut self, event: Event<'a>) {
        let node = match event {
            Event::Scalar {
                text,
                plain,
                exotic,
                ..
            } => {
                self.exotic |= exotic;
                if plain {
                    Node::Plain(text)
                } else {
                    Node::Quoted(text)
                }
            }
            Event::SequenceStart { tagged, .. } => {
                self.exotic |= tagged;
                Node::SeqStart
            }
            Event::MappingStart { tagged, .. } => {
                self.exotic |= tagged;
                Node::MapStart
            }
            Event::CollectionEnd => Node::End,
            Event::Alias => {
                self.exotic = true;
                return;
            }
            Event::DocumentStart => {
                self.documents += 1;
                return;
            }
            Event::StreamEnd => {
                self.ended = true;
                return;
            }
            Event::Other => return,
        };
        self.nodes.push(node);
    }
}

mod de;
mod plain;

pub(super) use de::deserialize;

#[cfg(test)]
mod tests;
