//! A safe event iterator over libyaml-rs, which is a C translation with a
//! raw-pointer API.

use std::{marker::PhantomData, mem::MaybeUninit};

use libyaml_rs as sys;

use super::Mark;

pub(super) enum Event {
    Scalar {
        /// The text, when it was asked for.
        text: Option<String>,
        /// For a plain scalar YAML reads as a number other than a
        /// decimal integer: its text.
        non_decimal: Option<String>,
        anchored: bool,
    },
    Alias,
    SequenceStart {
        anchored: bool,
    },
    MappingStart {
        anchored: bool,
    },
    CollectionEnd,
    StreamEnd,
    /// Stream start and document boundaries.
    Other,
}

pub(super) struct Parser<'input> {
    /// Boxed: libyaml keeps a pointer to the parser in the parser (its
    /// read handler's data), so it must never move.
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    done: bool,
    /// libyaml reads the input through a raw pointer until dropped.
    _input: PhantomData<&'input [u8]>,
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
            _input: PhantomData,
        }
    }

    /// The next event and where it starts; `None` after the end of the
    /// stream or at the first syntax error. A scalar's text is copied
    /// out only if `want_text`.
    pub(super) fn next(&mut self, want_text: bool) -> Option<(Event, Mark)> {
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
                    Event::Scalar {
                        text: want_text.then(|| String::from_utf8_lossy(bytes).into_owned()),
                        non_decimal: (plain && super::is_non_decimal_number(bytes))
                            .then(|| String::from_utf8_lossy(bytes).into_owned()),
                        anchored: !scalar.anchor.is_null(),
                    }
                }
                sys::YAML_ALIAS_EVENT => Event::Alias,
                sys::YAML_SEQUENCE_START_EVENT => Event::SequenceStart {
                    anchored: !(*event).data.sequence_start.anchor.is_null(),
                },
                sys::YAML_MAPPING_START_EVENT => Event::MappingStart {
                    anchored: !(*event).data.mapping_start.anchor.is_null(),
                },
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::CollectionEnd,
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
