//! `check --format github` and `check --format sarif`: the findings of a
//! check in the forms CI systems turn into annotations on the changed lines.

use serde::Serialize;
use tollgate::diagnostic::{Diagnostic, Severity};

/// The rule id of every finding: diagnostics carry no finer kind yet.
pub const RULE_ID: &str = "policy";

/// GitHub Actions workflow commands, one line each:
/// `::error file=F,line=L,col=C,title=T::message` (or `::warning`), and
/// `::notice::` for notes.
pub fn github(diagnostics: &[Diagnostic], notes: &[String]) -> String {
    let mut out = String::new();
    for note in notes {
        out.push_str(&format!(
            "::notice title={}::{}\n",
            property("tollgate check"),
            data(note)
        ));
    }
    for d in diagnostics {
        let command = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut properties = vec![format!("file={}", property(&d.file))];
        if d.line > 0 {
            properties.push(format!("line={}", d.line));
            properties.push(format!("col={}", d.column));
        }
        let title = if d.field.is_empty() {
            "tollgate check"
        } else {
            &d.field
        };
        properties.push(format!("title={}", property(title)));
        out.push_str(&format!(
            "::{command} {}::{}\n",
            properties.join(","),
            data(&d.message)
        ));
    }
    out
}

/// A workflow command's message: `%`, CR and LF escaped (as
/// `@actions/core`'s `escapeData`).
pub fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,` (`escapeProperty`).
pub fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

/// SARIF 2.1.0 (OASIS), the subset code scanning reads.
#[derive(Serialize)]
pub struct Sarif {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: [Run; 1],
}

#[derive(Serialize)]
struct Run {
    tool: Tool,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    rules: [ReportingDescriptor; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportingDescriptor {
    id: &'static str,
    short_description: Message,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: &'static str,
    level: &'static str,
    message: Message,
    locations: Vec<Location>,
}

#[derive(Serialize)]
struct Message {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: PhysicalLocation,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
    start_column: usize,
}

impl Sarif {
    pub fn new(diagnostics: &[Diagnostic]) -> Sarif {
        let results = diagnostics
            .iter()
            .map(|d| SarifResult {
                rule_id: RULE_ID,
                level: match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                message: Message {
                    text: if d.field.is_empty() {
                        d.message.clone()
                    } else {
                        format!("{}: {}", d.field, d.message)
                    },
                },
                locations: vec![Location {
                    physical_location: PhysicalLocation {
                        artifact_location: ArtifactLocation { uri: uri(&d.file) },
                        region: (d.line > 0).then_some(Region {
                            start_line: d.line,
                            // SARIF columns are 1-based; 0 means unknown.
                            start_column: d.column.max(1),
                        }),
                    },
                }],
            })
            .collect();
        Sarif {
            schema: "https://json.schemastore.org/sarif-2.1.0.json",
            version: "2.1.0",
            runs: [Run {
                tool: Tool {
                    driver: Driver {
                        name: "tollgate",
                        version: env!("CARGO_PKG_VERSION"),
                        rules: [ReportingDescriptor {
                            id: RULE_ID,
                            short_description: Message {
                                text: "Tollgate policy validation (tollgate check)".into(),
                            },
                        }],
                    },
                },
                results,
            }],
        }
    }
}

/// A file path as a URI reference: relative paths stay relative (to the
/// directory `check` ran in, the repository root in CI), absolute ones
/// become `file://` URIs; bytes outside RFC 3986's unreserved set and `/`
/// are percent-encoded.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_messages_and_properties() {
        assert_eq!(data("50%\r\nok: a,b"), "50%25%0D%0Aok: a,b");
        assert_eq!(property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
        let d = Diagnostic::warning(
            std::path::Path::new("p,1:x.yaml"),
            0,
            0,
            "",
            "100% sure".into(),
        );
        assert_eq!(
            github(&[d], &[]),
            "::warning file=p%2C1%3Ax.yaml,title=tollgate check::100%25 sure\n"
        );
    }

    #[test]
    fn uris_are_encoded() {
        assert_eq!(uri("policies/a b.yaml"), "policies/a%20b.yaml");
        assert_eq!(uri("/etc/p/m.yaml"), "file:///etc/p/m.yaml");
    }
}
