//! `vigil-sensor rules check`: the public SigmaHQ Linux rules all load; broken rules are named
//! with their file, line and problem while the others still load.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::path::PathBuf;

use vigil_tests::sensor_cmd;

/// The project's own Sigma fixtures (every log source, modifier and condition form).
fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sigma")
}

/// The public SigmaHQ Linux rules, when `VIGIL_SIGMA_DIR` names them (`.ci/run` sets it to
/// the copy beside the checkout when there is one); None, said on standard error, otherwise.
fn sigma_corpus(test: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("VIGIL_SIGMA_DIR") else {
        vigil_tests::skipped(test, "VIGIL_SIGMA_DIR is not set");
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "VIGIL_SIGMA_DIR={} is not a directory",
        dir.display()
    );
    Some(dir)
}

fn check(dir: &std::path::Path) -> String {
    let out = sensor_cmd(&["rules", "check", dir.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rules check failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every rule of the three supported categories under `dir` loads.
fn every_rule_loads(dir: &std::path::Path, at_least: usize) {
    let mut expected = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml") {
                let text = std::fs::read_to_string(&p).expect("read rule");
                if ["process_creation", "file_event", "network_connection"]
                    .iter()
                    .any(|c| text.contains(&format!("category: {c}")))
                {
                    expected += 1;
                }
            }
        }
    }
    assert!(
        expected >= at_least,
        "found only {expected} rules under {}",
        dir.display()
    );
    let out = check(dir);
    let last = out.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("loaded {expected} of {expected} rules"),
        "{out}"
    );
}

#[test]
fn every_sigma_fixture_loads() {
    every_rule_loads(&fixtures(), 8);
}

#[test]
fn every_sigmahq_linux_rule_of_the_three_categories_loads() {
    if let Some(dir) = sigma_corpus("every_sigmahq_linux_rule_of_the_three_categories_loads") {
        every_rule_loads(&dir, 100);
    }
}

#[test]
fn broken_rules_are_named_and_the_good_one_still_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).expect("write");
    let head = "title: t\nlogsource:\n  product: linux\n  category: process_creation\n";
    rule(
        "good.yml",
        &format!(
            "{head}detection:\n  selection:\n    Image|endswith: /nc\n  condition: selection\n"
        ),
    );
    rule("syntax.yml", "title: t\ndetection: [unclosed\n");
    rule(
        "modifier.yml",
        &format!(
            "{head}detection:\n  selection:\n    CommandLine|base64offset|contains: x\n  condition: selection\n"
        ),
    );
    rule(
        "field.yml",
        &format!("{head}detection:\n  selection:\n    Hashes: abc\n  condition: selection\n"),
    );
    rule(
        "condition.yml",
        &format!(
            "{head}detection:\n  selection:\n    Image: /bin/sh\n  condition: selection and nope\n"
        ),
    );
    let out = check(dir.path());
    let line_for = |file: &str| {
        out.lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not named in:\n{out}"))
            .to_owned()
    };
    let syntax = line_for("syntax.yml");
    assert!(
        syntax.contains("syntax.yml:3:1: invalid YAML") && syntax.contains("line 2 column 12"),
        "the YAML error names where it was found and where the bad sequence began: {out}"
    );
    assert!(
        line_for("modifier.yml").contains("modifier \"base64offset\" is not supported"),
        "{out}"
    );
    assert!(
        line_for("modifier.yml").contains("modifier.yml:7"),
        "the modifier error names its line: {out}"
    );
    assert!(line_for("field.yml").contains("field \"Hashes\""), "{out}");
    assert!(line_for("condition.yml").contains("\"nope\""), "{out}");
    assert!(!out.contains("good.yml"), "{out}");
    assert_eq!(out.lines().last(), Some("loaded 1 of 5 rules"));
}

#[test]
fn rules_test_applies_the_policy_exceptions_to_the_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tmp-exec.yml"),
        r#"id: t-exec-tmp
title: Exec from /tmp
description: a test rule
technique: [T1204]
severity: high
confidence: high
match:
  kind: exec
  where:
    exe|startswith: /tmp/
tests:
  - name: a payload
    expect: match
    events:
      - {kind: exec, pid: 5, exe: /tmp/x}
  - name: the build runner, excepted
    expect: suppressed
    events:
      - {kind: exec, pid: 6, exe: /tmp/build-1/cc1}
  - name: not from /tmp
    expect: no_match
    events:
      - {kind: exec, pid: 7, exe: /usr/bin/cc}
"#,
    )
    .expect("rule");
    let policy = dir.path().join("policy.toml");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"),
    )
    .expect("shipped policy");
    std::fs::write(
        &policy,
        format!(
            "{shipped}\n[[exceptions]]\nrule = \"t-exec-tmp\"\nprocess = \"/tmp/build-*\"\nreason = \"the compiler of the CI runner\"\n"
        ),
    )
    .expect("policy");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    std::fs::rename(dir.path().join("tmp-exec.yml"), rules.join("tmp-exec.yml")).expect("mv");
    let rules_s = rules.to_str().expect("utf-8");
    let with = sensor_cmd(&[
        "rules",
        "test",
        rules_s,
        "--policy",
        policy.to_str().expect("utf-8"),
    ]);
    let out = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(
        out.contains("ok   t-exec-tmp: the build runner, excepted"),
        "{out}"
    );
    assert!(out.contains("3 test cases, 0 failures"), "{out}");

    // Without the policy the suppressed case cannot hold, and says why.
    let without = sensor_cmd(&["rules", "test", rules_s]);
    let out = String::from_utf8_lossy(&without.stdout);
    assert!(!without.status.success(), "{out}");
    assert!(out.contains("run `rules test` with --policy"), "{out}");

    // An exception that swallows a must-match case is a failure naming it.
    std::fs::write(
        &policy,
        format!(
            "{shipped}\n[[exceptions]]\nrule = \"t-exec-tmp\"\nprocess = \"/tmp/*\"\nreason = \"too wide\"\n"
        ),
    )
    .expect("policy");
    let wide = sensor_cmd(&[
        "rules",
        "test",
        rules_s,
        "--policy",
        policy.to_str().expect("utf-8"),
    ]);
    let out = String::from_utf8_lossy(&wide.stdout);
    assert!(!wide.status.success(), "{out}");
    assert!(
        out.contains("FAIL t-exec-tmp: a payload") && out.contains("exception 1 (too wide)"),
        "{out}"
    );
}
