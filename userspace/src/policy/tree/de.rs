//! A `serde::Deserializer` over a [`Tree`] that reads what yaml_serde 0.10
//! reads from the same events, for the calls the policy spec makes:
//! `deserialize_any` (a plain scalar typed by its text, see `plain`),
//! strings and identifiers (any scalar's text as written), options (a plain
//! empty, `~` or `null` scalar is none), sequences, maps and structs (a
//! plain empty scalar is an empty one). A visitor that stops before the
//! end of its collection is an error, as yaml_serde counts the rest.
//!
//! Every other call, and every error, is [`Undecided`]: the caller asks
//! yaml_serde instead, so nothing here needs to word an error.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Visitor,
    value::{MapDeserializer, SeqDeserializer},
};

use super::{
    Node, Tree,
    plain::{Plain, resolve},
};

/// Why the tree reader left a document to yaml_serde (for tests: the user
/// sees yaml_serde's own message).
#[derive(Debug)]
pub(in crate::policy) struct Undecided(String);

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Undecided {}

impl de::Error for Undecided {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Undecided(message.to_string())
    }
}

/// Reads the whole tree as a `T`.
pub(in crate::policy) fn deserialize<T: DeserializeOwned>(tree: &Tree<'_>) -> Result<T, Undecided> {
    let mut cursor = Cursor {
        nodes: &tree.nodes,
        next: 0,
    };
    let value = T::deserialize(&mut cursor)?;
    if cursor.next != tree.nodes.len() {
        return Err(Undecided("nodes after the document".into()));
    }
    Ok(value)
}

struct Cursor<'t, 'a> {
    nodes: &'t [Node<'a>],
    /// The index of the next node to read.
    next: usize,
}

impl<'t, 'a> Cursor<'t, 'a> {
    fn take(&mut self) -> Result<&'t Node<'a>, Undecided> {
        let node = self.peek().ok_or_else(|| Undecided("end of tree".into()))?;
        self.next += 1;
        Ok(node)
    }

    fn peek(&self) -> Option<&'t Node<'a>> {
        self.nodes.get(self.next)
    }

    fn at_end(&self) -> bool {
        matches!(self.peek(), Some(Node::End))
    }

    /// Hands the collection whose start was just read to `visit`, then
    /// reads its end, which `visit` must have reached.
    fn collection<T>(
        &mut self,
        visit: impl FnOnce(Items<'_, 't, 'a>) -> Result<T, Undecided>,
    ) -> Result<T, Undecided> {
        let value = visit(Items { cursor: self })?;
        match self.take()? {
            Node::End => Ok(value),
            _ => Err(Undecided("collection not read to its end".into())),
        }
    }
}

/// Whether a plain scalar asked for as a collection is an empty one.
fn empty_plain(node: &Node<'_>) -> bool {
    matches!(node, Node::Plain(text) if text.is_empty())
}

fn unexpected<T>(node: &Node<'_>, wanted: &str) -> Result<T, Undecided> {
    Err(Undecided(format!("{node:?} where {wanted} was asked for")))
}

/// The calls the spec never makes: yaml_serde decides them.
macro_rules! undecided {
    ($($method:ident($($type:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $(_: $type,)* _: V) -> Result<V::Value, Undecided> {
            Err(Undecided(concat!(stringify!($method), " is left to yaml_serde").into()))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Cursor<'_, '_> {
    type Error = Undecided;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        match self.take()? {
            Node::Plain(text) => match resolve(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(value) => visitor.visit_bool(value),
                Plain::Unsigned(value) => visitor.visit_u64(value),
                Plain::Negative(value) => visitor.visit_i64(value),
                Plain::Text => visitor.visit_str(text),
                Plain::Undecided => Err(Undecided(format!("{text:?} may be a number"))),
            },
            Node::Quoted(text) => visitor.visit_str(text),
            Node::SeqStart => self.collection(|items| visitor.visit_seq(items)),
            Node::MapStart => self.collection(|items| visitor.visit_map(items)),
            node @ Node::End => unexpected(node, "a value"),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        match self.take()? {
            Node::Plain(text) | Node::Quoted(text) => visitor.visit_str(text),
            node => unexpected(node, "a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        match self.peek() {
            Some(Node::Plain(text)) if resolve(text) == Plain::Null => {
                self.next += 1;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        match self.take()? {
            Node::SeqStart => self.collection(|items| visitor.visit_seq(items)),
            node if empty_plain(node) => {
                visitor.visit_seq(SeqDeserializer::new(std::iter::empty::<()>()))
            }
            node => unexpected(node, "a sequence"),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Undecided> {
        match self.take()? {
            Node::MapStart => self.collection(|items| visitor.visit_map(items)),
            node if empty_plain(node) => {
                visitor.visit_map(MapDeserializer::new(std::iter::empty::<((), ())>()))
            }
            node => unexpected(node, "a mapping"),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Undecided> {
        self.deserialize_map(visitor)
    }

    undecided! {
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_unit(),
        deserialize_unit_struct(&'static str),
        deserialize_newtype_struct(&'static str),
        deserialize_tuple(usize),
        deserialize_tuple_struct(&'static str, usize),
        deserialize_enum(&'static str, &'static [&'static str]),
        deserialize_ignored_any(),
    }
}

/// The items of a sequence or the entries of a mapping, read up to its
/// [`Node::End`] (which [`Cursor::collection`] reads).
struct Items<'c, 't, 'a> {
    cursor: &'c mut Cursor<'t, 'a>,
}

impl Items<'_, '_, '_> {
    /// The next item (or mapping key), `None` at the collection's end.
    fn next<'de, T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Undecided> {
        if self.cursor.at_end() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.cursor).map(Some)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, '_, '_> {
    type Error = Undecided;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Undecided> {
        self.next(seed)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, '_, '_> {
    type Error = Undecided;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Undecided> {
        self.next(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Undecided> {
        seed.deserialize(&mut *self.cursor)
    }
}
