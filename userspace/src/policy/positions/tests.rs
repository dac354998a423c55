use super::*;

fn at(line: usize, column: usize) -> Mark {
    Mark { line, column }
}

const TEXT: &str = "\
groups:
  meters:
    devices:
      - 10.64.0.0/16
    rules:
      - allow:
          to: [a, b]
          ports: [443, \"1-2\"]
      - deny: {to: c}
";

#[test]
fn values_and_keys_are_found_by_path() {
    let p = Positions::index(TEXT);
    assert_eq!(p.value("groups.meters.devices[0]"), at(4, 9));
    assert_eq!(p.key("groups.meters"), at(2, 3));
    assert_eq!(p.value("groups.meters"), at(3, 5));
    assert_eq!(p.value("groups.meters.rules[0]"), at(6, 9));
    assert_eq!(p.value("groups.meters.rules[0].allow.to[1]"), at(7, 19));
    assert_eq!(p.value("groups.meters.rules[0].allow.ports[1]"), at(8, 24));
    assert_eq!(p.value("groups.meters.rules[1].deny.to"), at(9, 20));
    assert_eq!(p.key("groups.meters.rules[1].deny.to"), at(9, 16));
    assert!(!p.is_blank());
}

#[test]
fn sequence_items_nested_and_unterminated() {
    let p = Positions::index("a:\n  - [x, y]\n  - - z\n    - w\nb: [1, 2\n");
    assert_eq!(p.value("a[0]"), at(2, 5));
    assert_eq!(p.value("a[0][1]"), at(2, 9));
    assert_eq!(p.value("a[1][1]"), at(4, 7));
    // The walk stops at the syntax error; what came before is kept.
    assert_eq!(p.value("b[0]"), at(5, 5));
    assert_eq!(p.value("a[9]"), at(2, 3));
}

#[test]
fn unknown_paths_fall_back_to_the_nearest_ancestor() {
    let p = Positions::index(TEXT);
    assert_eq!(p.value("groups.meters.rules[0].allow.to[7]"), at(7, 15));
    assert_eq!(p.value("nothing.here"), at(1, 1));
}

#[test]
fn duplicate_keys_are_reported() {
    let p = Positions::index("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n");
    let d = p.duplicate_keys();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].path, "b.c");
    assert_eq!((d[0].first, d[0].second), (at(3, 3), at(4, 3)));
    assert_eq!(d[1].path, "a");
}

#[test]
fn aliases_and_complex_keys_do_not_derail_the_walk() {
    let p = Positions::index("x: &a [1, 2]\ny: *a\n? [k]\n: v\nz: 1\n");
    assert_eq!(p.value("y"), at(2, 4));
    assert_eq!(p.value("z"), at(5, 4));
    assert!(p.refuses_parsing());
    assert_eq!(p.problems().len(), 2, "the anchor and the alias");
    assert_eq!(p.problems()[0].0, at(1, 4));
    assert!(p.problems()[0].2.contains("anchors and aliases"));
}

#[test]
fn nesting_is_bounded_before_anything_is_indexed() {
    let deep = "[".repeat(100_000);
    let p = Positions::index(&deep);
    assert!(p.refuses_parsing());
    assert_eq!(p.problems().len(), 1);
    assert_eq!(p.problems()[0].0, at(1, MAX_NESTING + 1));
    assert!(p.problems()[0].2.contains("nested more than 64 levels"));
    let ok = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
    assert!(!Positions::index(&ok).refuses_parsing());
}

#[test]
fn only_plain_decimal_integers_are_numbers() {
    for bad in [
        "0x1bb", "0X1BB", "0o777", "0b101", "443.0", "1e3", "1E3", "+22", "0443", ".5", "5.",
        "-1.5", ".inf", "-.Inf", ".NaN", "1e-3", "+0x1",
    ] {
        assert!(is_non_decimal_number(bad.as_bytes()), "{bad}");
    }
    for good in [
        "443",
        "0",
        "-5",
        "10.0.0.0/8",
        "10.0.0.1",
        "::1",
        "fd00::/8",
        "aws-tokyo",
        "e3",
        "0x",
        "1-2",
        "1e",
        "tcp",
        ".",
        "-",
    ] {
        assert!(!is_non_decimal_number(good.as_bytes()), "{good}");
    }
    let p = Positions::index("ports: [443.0, 0x1bb, '0x1bb', +22]\nproto: 6.0\n");
    let found: Vec<_> = p
        .problems()
        .iter()
        .map(|(m, f, _)| (*m, f.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (at(1, 9), "ports[0]"),
            (at(1, 16), "ports[1]"),
            (at(1, 32), "ports[3]"),
            (at(2, 8), "proto")
        ]
    );
    assert!(
        p.problems()[0]
            .2
            .starts_with("\"443.0\" is not a decimal integer")
    );
    assert!(!p.refuses_parsing(), "reported, the rest is still checked");
}

#[test]
fn comments_only_is_blank_and_syntax_errors_stop_quietly() {
    assert!(Positions::index("# nothing\n\n").is_blank());
    assert!(Positions::index("").is_blank());
    assert!(!Positions::index("%BAD\n").is_blank());
    let p = Positions::index("a: 1\nb: [\n");
    assert_eq!(p.value("a"), at(1, 4));
    assert!(!p.is_blank());
}
