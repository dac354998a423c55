//! The tree reader against yaml_serde: whenever it decides a document, the
//! value must be the one yaml_serde reads from the same text.

use std::{fmt::Debug, path::Path};

use proptest::prelude::*;
use serde::de::DeserializeOwned;

use super::{deserialize, read};
use crate::policy::spec::PolicyFile;

/// Whether the tree decided `text` as a `T`; when it did, yaml_serde must
/// read the same value.
fn decided<T: DeserializeOwned + Debug>(text: &str) -> bool {
    let (_, tree) = read(text);
    let Some(fast) = tree.and_then(|tree| deserialize::<T>(&tree).ok()) else {
        return false;
    };
    let slow = yaml_serde::from_str::<T>(text)
        .unwrap_or_else(|e| panic!("the tree read {text:?}, yaml_serde did not: {e}"));
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text:?}");
    true
}

#[test]
fn policy_values_are_decided_as_yaml_serde_reads_them() {
    for value in [
        "443",
        "0",
        "-0",
        "-17",
        "18446744073709551615",
        "10.0.0.0/8",
        "10.64.0.10",
        "2001:db8::/32",
        "1-2",
        "10000-10100",
        "aws-tokyo",
        "tcp",
        "0443",
        "+0443",
        "-00",
        "inf",
        "-nan",
        "e5",
        "1..2",
        "5-",
        "+-5",
        "~",
        "null",
        "NULL",
        "nUll",
        "True",
        "false",
        "\"443\"",
        "'1e3'",
        "\"a\\tb\"",
        "'it''s'",
        "\"\"",
        "|\n  literal\n",
        ">\n  folded\n  lines\n",
        "[a, 443, '']",
        "{a: 1, b: [x]}",
        "",
    ] {
        let text = format!("k: {value}\n");
        assert!(decided::<yaml_serde::Value>(&text), "{text:?}");
    }
}

#[test]
fn numbers_other_than_decimal_integers_are_left_to_yaml_serde() {
    for value in [
        "0x1bb",
        "0o17",
        "0b11",
        "+22",
        "1.5",
        "1e3",
        ".inf",
        "-.inf",
        ".nan",
        "18446744073709551616",
        "-9223372036854775809",
    ] {
        assert!(
            !decided::<yaml_serde::Value>(&format!("k: {value}\n")),
            "{value}"
        );
    }
    // yaml_serde reads them (the positions walk reports them): 0x1 is "1".
    assert!(yaml_serde::from_str::<PolicyFile>("expect:\n  - {from: 0x1, to: 1.5}\n").is_ok());
    assert!(!decided::<PolicyFile>(
        "expect:\n  - {from: 0x1, to: 1.5}\n"
    ));
}

#[test]
fn what_only_yaml_serde_means_is_left_to_it() {
    for text in [
        "k: !!str 443\n",
        "k: !x {a: 1}\n",
        "k: [!!int 1]\n",
        "a: 1\n---\nb: 2\n",
        "a: [1, 2\n",
        "a: &x 1\nb: *x\n",
    ] {
        assert!(!decided::<yaml_serde::Value>(text), "{text:?}");
    }
}

#[test]
fn structure_errors_are_left_to_yaml_serde() {
    for text in [
        "groups:\n  g:\n    defualt: deny\n",
        "groups:\n  g:\n    rules:\n      - permit: {to: any}\n",
        "groups: [a]\n",
        "lists: ~\n",
        "groups:\n  g:\n    rules: ''\n",
        "groups:\n  g:\n    description: [a]\n",
        "groups:\n  g:\n    rules:\n      - allow: {to: {fqdn: [a], x: 1}}\n",
        "? [a]\n: b\n",
        "[]\n",
        "a\n",
    ] {
        assert!(!decided::<PolicyFile>(text), "{text:?}");
        assert!(
            yaml_serde::from_str::<PolicyFile>(text).is_err(),
            "{text:?}"
        );
    }
}

#[test]
fn empty_and_null_collections_read_as_yaml_serde_reads_them() {
    for text in [
        "---\n",
        "lists:\ngroups:\n",
        "groups:\n  g:\n    rules:\n    devices:\n    default: ~\n",
        "groups:\n  g:\n    rules:\n      - allow:\n      - deny: {to: {fqdn: }}\n",
        "groups:\n  g:\n    description: 12\n    devices: ''\n    rules: []\n",
        "unknown-devices: deny\nexpect: []\n",
    ] {
        assert!(decided::<PolicyFile>(text), "{text:?}");
    }
}

/// Every policy file of the repository (examples, test fixtures, the fuzz
/// corpus): decided, and read as yaml_serde reads it.
#[test]
fn the_repository_policies_are_decided_alike() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts = Vec::new();
    for dir in ["policies", "tests/policies", "tests/data", "tests/golden"] {
        collect_yaml(&root.join(dir), &mut texts);
    }
    let corpus = root.join("userspace/fuzz/corpus/policy_check");
    for entry in std::fs::read_dir(&corpus).unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            for part in bytes.split(|&b| b == 0) {
                texts.push(String::from_utf8_lossy(part).into_owned());
            }
        }
    }
    let decided_count = texts
        .iter()
        .filter(|text| decided::<PolicyFile>(text))
        .count();
    assert!(texts.len() > 20, "{} files", texts.len());
    assert!(
        decided_count > texts.len() / 2,
        "{decided_count} of {}",
        texts.len()
    );
}

fn collect_yaml(dir: &Path, texts: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, texts);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            texts.push(text);
        }
    }
}

/// A scalar written every way YAML allows.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+.0-9a-fA-Fxob_:/]{0,7}",
        "[-+.0-9a-z~]{0,5}",
        Just("~".to_string()),
        Just("''".to_string()),
        Just("null".to_string()),
        "'[-+.0-9a-z ]{0,5}'",
        "\"[-+.0-9a-z ]{0,3}(\\\\t|\\\\u0041)?\"",
    ]
}

/// A value of a field that takes one value or a list.
fn one_or_many() -> impl Strategy<Value = String> {
    prop_oneof![
        scalar(),
        proptest::collection::vec(scalar(), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", "))),
    ]
}

/// A rule's `to`: also `{fqdn: ...}`, and now and then a wrong mapping.
fn to() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => one_or_many(),
        1 => one_or_many().prop_map(|names| format!("{{fqdn: {names}}}")),
        1 => "\\{[a-z]{1,3}: [0-9a-z]{0,3}\\}",
    ]
}

proptest! {
    #[test]
    fn random_scalars_are_read_as_yaml_serde_reads_them(s in "[-+.0-9a-fA-FxobeEnNulLtrTRsS_~:/ ]{0,10}") {
        decided::<yaml_serde::Value>(&format!("k: [{s}]\n"));
        decided::<yaml_serde::Value>(&format!("k: {s}\n"));
    }

    #[test]
    fn random_policies_are_read_as_yaml_serde_reads_them(
        lists in one_or_many(),
        description in scalar(),
        devices in one_or_many(),
        scalars in proptest::collection::vec(scalar(), 4),
        ports in one_or_many(),
        to in proptest::collection::vec(to(), 2),
    ) {
        let text = format!(
            "lists:\n  l: {lists}\ngroups:\n  g:\n    description: {description}\n    \
             devices: {devices}\n    default: {}\n    rules:\n      \
             - allow: {{to: {}, ports: {ports}, proto: {}}}\n      - deny:\n          \
             to: {}\n          id: {}\nunknown-devices: {}\n",
            scalars[0], to[0], scalars[1], to[1], scalars[2], scalars[3],
        );
        decided::<PolicyFile>(&text);
    }
}
