//! A safe event iterator over libyaml-rs, which is a C translation with a
//! raw-pointer API.

use std::{borrow::Cow, mem::MaybeUninit};

use libyaml_rs as sys;

use super::Mark;

pub(in crate::policy) enum Event<'input> {
    Scalar {
        /// The value: a slice of the input when it is written there as is
        /// (no escapes, quotes or folded lines), else a copy.
        text: Cow<'input, str>,
        /// Unquoted and not a block (`|`, `>`): its type depends on its text.
        plain: bool,
        anchored: bool,
        /// An explicit tag (`!!str`, `!x`), or a value that is not UTF-8:
        /// only yaml_serde's own rules say what it means.
        exotic: bool,
    },
    Alias,
    SequenceStart {
        anchored: bool,
        tagged: bool,
    },
    MappingStart {
        anchored: bool,
        tagged: bool,
    },
    CollectionEnd,
    DocumentStart,
    StreamEnd,
    /// Stream start and document ends.
    Other,
}

pub(super) struct Parser<'input> {
    /// Boxed: libyaml keeps a pointer to the parser in the parser (its
    /// read handler's data), so it must never move.
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    done: bool,
    /// libyaml reads it through a raw pointer until dropped; scalars
    /// borrow their text from it.
    input: &'input str,
}

impl<'input> Parser<'input> {
    pub(super) fn new(input: &'input str) -> Self {
        let mut sys = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        let parser = sys.as_mut_ptr();
        // SAFETY: `parser` points to writable memory for a parser, which
        // initialize fills in; it fails only when allocation fails. The
        // input outlives the parser (the `'input` borrow).
        unsafe {
            assert!(
                sys::yaml_parser_initialize(parser).ok,
                "libyaml: out of memory"
            );
            sys::yaml_parser_set_encoding(parser, sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
        }
        Parser {
            sys,
            done: false,
            input,
        }
    }

    /// The next event and where it starts; `None` after the end of the
    /// stream or at the first syntax error.
    pub(super) fn next(&mut self) -> Option<(Event<'input>, Mark)> {
        if self.done {
            return None;
        }
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialised in `new` and not deleted;
        // on success `parse` initialises the event, which is read and
        // then deleted exactly once.
        unsafe {
            if sys::yaml_parser_parse(self.sys.as_mut_ptr(), raw.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let event = raw.as_mut_ptr();
            let mark = Mark {
                line: (*event).start_mark.line as usize + 1,
                column: (*event).start_mark.column as usize + 1,
            };
            let converted = match (*event).type_ {
                sys::YAML_SCALAR_EVENT => {
                    let scalar = (*event).data.scalar;
                    let bytes = if scalar.value.is_null() || scalar.length == 0 {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(scalar.value, scalar.length as usize)
                    };
                    let plain = scalar.style == sys::YAML_PLAIN_SCALAR_STYLE;
                    let quoted = scalar.style == sys::YAML_SINGLE_QUOTED_SCALAR_STYLE
                        || scalar.style == sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE;
                    // The bytes between the marks, less the quotes: the
                    // value itself unless escapes or line folding changed it.
                    let written = (plain || quoted)
                        .then(|| {
                            let (start, end) = (
                                (*event).start_mark.index as usize,
                                (*event).end_mark.index as usize,
                            );
                            let quote = usize::from(quoted);
                            self.input.get(start + quote..end.checked_sub(quote)?)
                        })
                        .flatten()
                        .filter(|written| written.as_bytes() == bytes);
                    let (text, utf8) = match written {
                        Some(written) => (Cow::Borrowed(written), true),
                        None => match std::str::from_utf8(bytes) {
                            Ok(text) => (Cow::Owned(text.to_owned()), true),
                            Err(_) => (
                                Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
                                false,
                            ),
                        },
                    };
                    Event::Scalar {
                        text,
                        plain,
                        anchored: !scalar.anchor.is_null(),
                        exotic: !scalar.tag.is_null() || !utf8,
                    }
                }
                sys::YAML_ALIAS_EVENT => Event::Alias,
                sys::YAML_SEQUENCE_START_EVENT => Event::SequenceStart {
                    anchored: !(*event).data.sequence_start.anchor.is_null(),
                    tagged: !(*event).data.sequence_start.tag.is_null(),
                },
                sys::YAML_MAPPING_START_EVENT => Event::MappingStart {
                    anchored: !(*event).data.mapping_start.anchor.is_null(),
                    tagged: !(*event).data.mapping_start.tag.is_null(),
                },
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::CollectionEnd,
                sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                sys::YAML_STREAM_END_EVENT => {
                    self.done = true;
                    Event::StreamEnd
                }
                _ => Event::Other,
            };
            sys::yaml_event_delete(event);
            Some((converted, mark))
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, deleted only here.
        unsafe { sys::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}
