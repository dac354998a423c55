//! The language reference (`policies/README.md`) tells the truth: every
//! `$ tollgate ...` command in a `console` block is run from the repository
//! root and its output must equal the lines under it. This is what makes the
//! worked examples (one per tie-break) a test of `explain`.
//!
//! `TOLLGATE_BLESS=1` rewrites the outputs in the README instead.

const README: &str = "policies/README.md";

/// A `console` block: its command and the output the README shows.
struct Example {
    command: String,
    shown: String,
}

fn examples(text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line != "```console" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let command = block
            .first()
            .and_then(|l| l.strip_prefix("$ "))
            .unwrap_or_else(|| panic!("a console block starts with `$ tollgate`: {block:?}"));
        examples.push(Example {
            command: command.to_string(),
            shown: block[1..].iter().map(|l| format!("{l}\n")).collect(),
        });
    }
    examples
}

/// Runs a README command: `tollgate ARGS [2>&1]`.
fn run(command: &str) -> String {
    let mut words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.remove(0), "tollgate", "{command}");
    let merge = words.last() == Some(&"2>&1");
    if merge {
        words.pop();
    }
    let run = testkit::tollgate(&words);
    if merge {
        format!("{}{}", run.stderr, run.stdout)
    } else {
        assert_eq!(run.status, 0, "{command}:\n{}", run.stderr);
        run.stdout
    }
}

#[test]
fn every_command_in_the_language_reference_prints_what_it_shows() {
    let path = testkit::repo_root().join(README);
    let text = std::fs::read_to_string(&path).unwrap();
    let examples = examples(&text);
    assert!(examples.len() >= 10, "the README lost its examples");
    let mut blessed = text.clone();
    let mut wrong = Vec::new();
    for example in &examples {
        let actual = run(&example.command);
        if actual != example.shown {
            let old = format!("$ {}\n{}```", example.command, example.shown);
            let new = format!("$ {}\n{actual}```", example.command);
            blessed = blessed.replacen(&old, &new, 1);
            wrong.push(format!(
                "$ {}\n--- README shows\n{}--- tollgate prints\n{actual}",
                example.command, example.shown
            ));
        }
    }
    if testkit::blessing() {
        std::fs::write(&path, blessed).unwrap();
    } else {
        assert!(
            wrong.is_empty(),
            "{README} is out of date (TOLLGATE_BLESS=1 rewrites it):\n{}",
            wrong.join("\n")
        );
    }
}

#[test]
fn the_tie_break_examples_cover_every_tie_break() {
    let text = std::fs::read_to_string(testkit::repo_root().join(README)).unwrap();
    for lost in [
        "lost: the winner's destination prefix is longer",
        "lost: the winner names a protocol, this one is any",
        "lost: the winner's port range is narrower",
        "lost: equal specificity: deny wins over allow",
    ] {
        assert!(text.contains(lost), "no worked example shows `{lost}`");
    }
    assert!(text.contains("decided   built-in ntp"));
    assert!(text.contains("beat      builtin-ntp"));
}

#[test]
fn the_reference_example_is_a_valid_policy() {
    let text = std::fs::read_to_string(testkit::repo_root().join(README)).unwrap();
    let reference = &text[text.find("## Reference").expect("a Reference section")..];
    let start = reference.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let yaml = &reference[start..start + reference[start..].find("```").unwrap()];
    let env = tollgate::policy::Environment {
        gateway: vec!["10.64.0.1".parse().unwrap()],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    };
    let source = tollgate::policy::Source {
        path: "README.md".into(),
        text: yaml.to_string(),
    };
    let loaded = tollgate::policy::from_sources(&[source], &env)
        .unwrap_or_else(|d| panic!("the reference example is invalid: {d:#?}"));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    assert_eq!(loaded.policy.groups[0].name, "meters");
}
