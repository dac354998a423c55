//! What an untagged plain scalar is when the deserialiser is asked for any
//! type (`Scalar`, `OneOrMany` and `ToSpec` ask so): yaml_serde resolves it
//! by the YAML 1.2 core schema as null, a boolean, an integer, a float or
//! else a string. Policies hold decimal integers and strings, so those two
//! are decided here; text that could be any other number (hex, octal,
//! binary, a float, a leading `+`, an integer beyond 64 bits) is
//! [`Plain::Undecided`] and left to yaml_serde.

/// What a plain scalar means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plain {
    Null,
    Bool(bool),
    Unsigned(u64),
    Negative(i64),
    /// A string: the text itself.
    Text,
    Undecided,
}

pub(super) fn resolve(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        _ => {}
    }
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !magnitude.is_empty() && magnitude.bytes().all(|b| b.is_ascii_digit()) {
        if magnitude.len() > 1 && magnitude.starts_with('0') {
            // Leading zeros: YAML 1.2 makes `0443` a string, not octal.
            return Plain::Text;
        }
        let number = if negative {
            text.parse().ok().map(Plain::Negative)
        } else {
            text.parse().ok().map(Plain::Unsigned)
        };
        return number.unwrap_or(Plain::Undecided);
    }
    if is_surely_text(text) {
        Plain::Text
    } else {
        Plain::Undecided
    }
}

/// Whether no number syntax can read `text` (not all digits): integers are
/// an optional sign, an optional `0x`/`0o`/`0b` and digits; floats are
/// digits with at most one point and an exponent, or `.inf`/`.nan`
/// (`inf` and `nan` themselves are strings: the schema wants the point).
fn is_surely_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    // Leading zeros after a sign (`+0443`) make a string as well.
    let leading_zeros = unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| b.is_ascii_digit());
    // A character no number has (`/`, `:`, a space, `_`, non-ASCII).
    let foreign = bytes
        .iter()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')));
    let points = bytes.iter().filter(|b| **b == b'.').count();
    // Numbers start with a digit or a point after the sign; a letter first
    // is at most `inf`/`nan`, which are not finite and so strings.
    let letter_first = unsigned.starts_with(|c: char| c.is_ascii_alphabetic());
    // A sign inside is only an exponent's (`1e-5`): `10000-10100` is text.
    let inner_sign = bytes
        .windows(2)
        .any(|w| matches!(w[1], b'+' | b'-') && !matches!(w[0], b'e' | b'E'));
    leading_zeros || foreign || points > 1 || letter_first || inner_sign
}
