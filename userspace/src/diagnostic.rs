//! Errors and warnings about input files, in the `file:line:col: field: message`
//! form compilers use, so editors and CI logs link straight to the spot.

use std::{fmt, path::Path};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about one place in one file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based; 0 when the finding concerns the whole file.
    pub line: usize,
    pub column: usize,
    /// The offending field as a path, e.g. `groups.meters.rules[2].allow.ports[1]`;
    /// empty when the finding is not about one field.
    pub field: String,
    pub message: String,
}

/// Longest message or field path kept; the rest of a hostile file's text
/// never reaches the journal or `status`.
const MAX_MESSAGE: usize = 400;
/// Longest prefix of a key or value that [`quote`] shows.
const MAX_QUOTED: usize = 40;

/// A key or value from an input file as a message shows it: quoted,
/// control characters escaped, at most 40 characters of it.
pub fn quote(text: &str) -> String {
    let mut shown: String = text.chars().take(MAX_QUOTED).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("\"{}\"", shown.escape_debug())
}

/// Escapes control characters (a message is one line of a log) and caps
/// the length.
fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE + 8));
    for c in text.chars() {
        if out.len() >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Diagnostic {
    pub fn error(file: &Path, line: usize, column: usize, field: &str, message: String) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: bounded(&file.display().to_string()),
            line,
            column,
            field: bounded(field),
            message: bounded(&message),
        }
    }

    pub fn warning(file: &Path, line: usize, column: usize, field: &str, message: String) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, column, field, message)
        }
    }

    /// Converts a yaml_serde error. Its message already starts with the field
    /// path; its location is moved to the front.
    pub fn from_yaml(file: &Path, err: &yaml_serde::Error) -> Self {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = err.to_string();
        if let Some(at) = message.rfind(" at line ")
            && message[at..]
                .trim_start_matches(" at line ")
                .split(" column ")
                .all(|n| n.chars().all(|c| c.is_ascii_digit()))
        {
            message.truncate(at);
        }
        let (field, message) = match message.split_once(": ") {
            Some((field, rest)) if is_field_path(field) => (field.to_string(), rest.to_string()),
            _ => (String::new(), message),
        };
        Diagnostic::error(file, line, column, &field, message)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A yaml_serde path looks like `groups.meters.rules[2].allow`: no spaces.
fn is_field_path(s: &str) -> bool {
    !s.is_empty() && !s.contains(' ')
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.severity == Severity::Warning {
            write!(f, ": warning")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Deserialises a mapping as `R`, then converts it with `TryFrom`, *inside*
/// the mapping's own deserialisation: yaml_serde then stamps a conversion
/// error with the mapping's position and field path, which a plain
/// `#[serde(try_from)]` (converting after the mapping is done) would lose.
/// Use with `#[serde(deserialize_with = "validated_map::<_, Raw, T>")]`.
pub fn validated_map<'de, D, R, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    R: serde::Deserialize<'de>,
    T: TryFrom<R>,
    T::Error: fmt::Display,
{
    struct MapVisitor<R, T>(std::marker::PhantomData<(R, T)>);

    impl<'de, R, T> serde::de::Visitor<'de> for MapVisitor<R, T>
    where
        R: serde::Deserialize<'de>,
        T: TryFrom<R>,
        T::Error: fmt::Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            T::try_from(raw).map_err(serde::de::Error::custom)
        }
    }

    deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_text_is_short_and_escaped() {
        assert_eq!(quote("aws-tokyo"), "\"aws-tokyo\"");
        let long = "x".repeat(1000);
        assert_eq!(quote(&long), format!("\"{}…\"", "x".repeat(40)));
        assert_eq!(quote("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
        let d = Diagnostic::error(Path::new("f.yaml"), 1, 1, "", format!("{long}\n{long}"));
        assert!(
            d.message.chars().count() <= MAX_MESSAGE + 1,
            "{}",
            d.message.len()
        );
        assert!(!d.to_string().contains('\n'));
    }
}
