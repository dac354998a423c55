//! Domain-name patterns of FQDN rules, and whether a name matches one.
//!
//! Pure: no IO. A pattern is a name (`iot.example.com`), `*.` and a name
//! (exactly one more label: `a.data.example.com` but not
//! `data.example.com` nor `a.b.data.example.com`), or `**.` and a name
//! (one or more labels). Patterns and names are compared in their
//! normalised form: ASCII (an internationalised name in its punycode form,
//! by IDNA/UTS 46), lower case, without the trailing dot.

use std::fmt;

/// The longest name DNS carries in text form, without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wildcard {
    /// The name itself.
    None,
    /// `*.`: exactly one label before the name.
    OneLabel,
    /// `**.`: one or more labels before the name.
    Labels,
}

/// One `fqdn` item of a rule, normalised.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FqdnPattern {
    pub wildcard: Wildcard,
    /// The name after the wildcard, normalised.
    pub base: String,
}

impl FqdnPattern {
    /// Parses an `fqdn` item as written. `Err` says what is wrong with it,
    /// for a message that quotes the item first.
    pub fn parse(text: &str) -> Result<FqdnPattern, String> {
        let (wildcard, rest) = if let Some(rest) = text.strip_prefix("**.") {
            (Wildcard::Labels, rest)
        } else if let Some(rest) = text.strip_prefix("*.") {
            (Wildcard::OneLabel, rest)
        } else {
            (Wildcard::None, text)
        };
        if rest.contains('*') {
            return Err(
                "a wildcard is only `*.` (exactly one label) or `**.` (one or more \
                        labels), at the start"
                    .into(),
            );
        }
        let base = normalise(rest)?;
        if !base.contains('.') {
            return Err("a top-level domain alone: give at least two labels (example.com)".into());
        }
        Ok(FqdnPattern { wildcard, base })
    }

    /// Whether the normalised `name` (see [`normalise`]) matches.
    pub fn matches(&self, name: &str) -> bool {
        // What comes before the base: "" for the base itself, else the
        // labels before its dot; `None` when the name is not under it.
        let Some(head) = name.strip_suffix(self.base.as_str()).and_then(|h| {
            if h.is_empty() {
                Some(h)
            } else {
                h.strip_suffix('.')
            }
        }) else {
            return false;
        };
        match self.wildcard {
            Wildcard::None => head.is_empty(),
            Wildcard::OneLabel => !head.is_empty() && !head.contains('.'),
            Wildcard::Labels => !head.is_empty(),
        }
    }
}

impl fmt::Display for FqdnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wildcard {
            Wildcard::None => f.write_str(&self.base),
            Wildcard::OneLabel => write!(f, "*.{}", self.base),
            Wildcard::Labels => write!(f, "**.{}", self.base),
        }
    }
}

/// A domain name in the form patterns are compared in: IDNA to ASCII, lower
/// case, one trailing dot removed; each label 1-63 letters, digits, `-` or
/// `_`, the whole at most 253 characters.
pub fn normalise(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 4 * MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| "not a valid internationalised name".to_string())?
    };
    if ascii.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("an empty label (two dots in a row)".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("a label longer than {MAX_LABEL_LEN} characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{c:?} is not allowed in a name (letters, digits, - and _)"
            ));
        }
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        let name = normalise(name).unwrap();
        FqdnPattern::parse(pattern).unwrap().matches(&name)
    }

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(matches("iot.example.com", "iot.example.com"));
        assert!(matches("iot.example.com", "IOT.Example.COM."));
        assert!(matches("iot.example.com.", "iot.example.com"));
        assert!(!matches("iot.example.com", "a.iot.example.com"));
        assert!(!matches("iot.example.com", "xiot.example.com"));
        assert!(!matches("iot.example.com", "example.com"));
    }

    #[test]
    fn one_star_is_exactly_one_label() {
        assert!(matches("*.data.example.com", "a.data.example.com"));
        assert!(!matches("*.data.example.com", "data.example.com"));
        assert!(!matches("*.data.example.com", "a.b.data.example.com"));
        assert!(!matches("*.data.example.com", "adata.example.com"));
    }

    #[test]
    fn two_stars_are_one_or_more_labels() {
        assert!(matches(
            "**.amazonaws.com",
            "iot.ap-northeast-1.amazonaws.com"
        ));
        assert!(matches("**.amazonaws.com", "s3.amazonaws.com"));
        assert!(!matches("**.amazonaws.com", "amazonaws.com"));
        assert!(!matches("**.amazonaws.com", "notamazonaws.com"));
    }

    #[test]
    fn internationalised_names_compare_in_punycode() {
        let p = FqdnPattern::parse("bücher.example").unwrap();
        assert_eq!(p.base, "xn--bcher-kva.example");
        assert!(p.matches(&normalise("xn--bcher-kva.example.").unwrap()));
        assert!(p.matches(&normalise("BÜCHER.example").unwrap()));
        assert!(matches("*.xn--bcher-kva.example", "www.bücher.example"));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("a..example.com", "empty label"),
            ("ex*ample.com", "wildcard"),
            ("*.*.example.com", "wildcard"),
            ("com", "top-level"),
            ("*.com", "top-level"),
            ("exa mple.com", "not allowed"),
            (&format!("{}.com", "a".repeat(64)), "longer than 63"),
        ] {
            let e = FqdnPattern::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9-]{0,10}"
    }

    proptest! {
        #[test]
        fn wildcards_count_labels(
            prefix in proptest::collection::vec(label(), 0..4),
            base in proptest::collection::vec(label(), 2..4),
            upper in any::<bool>(),
            dot in any::<bool>(),
        ) {
            let base = base.join(".");
            let mut name = prefix.iter().map(|l| format!("{l}.")).collect::<String>() + &base;
            if upper { name = name.to_ascii_uppercase(); }
            if dot { name.push('.'); }
            let name = normalise(&name).unwrap();
            prop_assert_eq!(FqdnPattern::parse(&base).unwrap().matches(&name), prefix.is_empty());
            prop_assert_eq!(
                FqdnPattern::parse(&format!("*.{base}")).unwrap().matches(&name),
                prefix.len() == 1
            );
            prop_assert_eq!(
                FqdnPattern::parse(&format!("**.{base}")).unwrap().matches(&name),
                !prefix.is_empty()
            );
        }

        #[test]
        fn a_pattern_prints_as_it_parses(
            wildcard in 0..3u8,
            base in proptest::collection::vec(label(), 2..4),
        ) {
            let text = ["", "*.", "**."][wildcard as usize].to_string() + &base.join(".");
            let p = FqdnPattern::parse(&text).unwrap();
            prop_assert_eq!(p.to_string(), text.clone());
            prop_assert_eq!(FqdnPattern::parse(&p.to_string()).unwrap(), p);
        }
    }
}
