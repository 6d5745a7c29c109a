//! The documentation a newcomer follows: the README's quick start runs as written, the
//! command-line reference is the binaries' own help (so it cannot drift from the clap
//! definitions), and the book builds.
//!
//! `VIGIL_WRITE_DOCS=1` rewrites `docs/src/reference/cli.md` instead of comparing it
//! (`cargo xtask docs` does).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test stops loudly at the first thing that fails"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use vigil_tests::{fleet::controller_bin, kernel_tests_enabled, sensor_bin};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// `bin ARGS --help`, with no environment that would show in it.
fn help(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env_remove("VIGIL_STATE")
        .env_remove("VIGIL_LOG")
        .output()
        .expect("help runs");
    assert!(
        out.status.success(),
        "{} {args:?} --help: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands a help text lists under `Commands:` (`help` aside).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("        "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Every command of `bin`, depth first, with its help.
fn walk(bin: &Path, name: &str, path: &mut Vec<String>, out: &mut String) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let text = help(bin, &args);
    let title = std::iter::once(name)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(&format!(
        "## `{title}`\n\n```text\n{}\n```\n\n",
        text.trim_end()
    ));
    for sub in subcommands(&text) {
        path.push(sub);
        walk(bin, name, path, out);
        path.pop();
    }
}

fn cli_reference() -> String {
    let mut out = String::from(
        "# Command line\n\nGenerated from the binaries' own help by `cargo xtask docs`; a test fails when \
         this page and the binaries disagree. `--state DIR` is a global option of each binary \
         (default `/var/lib/vigil`, or `VIGIL_STATE`, for the sensor; `/var/lib/vigil-controller` \
         for the controller), before or after the subcommand.\n\n",
    );
    for (bin, name) in [
        (sensor_bin(), "vigil-sensor"),
        (controller_bin(), "vigil-controller"),
    ] {
        walk(&bin, name, &mut Vec::new(), &mut out);
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[test]
fn the_cli_reference_is_the_binaries_own_help() {
    let page = workspace().join("docs/src/reference/cli.md");
    let now = cli_reference();
    if std::env::var_os("VIGIL_WRITE_DOCS").is_some() {
        std::fs::write(&page, &now).expect("write the CLI reference");
        return;
    }
    let kept = std::fs::read_to_string(&page).unwrap_or_default();
    if kept != now {
        let first = kept
            .lines()
            .zip(now.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(kept.lines().count().min(now.lines().count()));
        panic!(
            "{} differs from the binaries' help from line {}: regenerate it with `cargo xtask docs`\n  kept: {:?}\n  help: {:?}",
            page.display(),
            first + 1,
            kept.lines().nth(first),
            now.lines().nth(first)
        );
    }
    for sub in ["run", "check", "rules test", "policy check", "undo"] {
        assert!(
            now.contains(&format!("## `vigil-sensor {sub}`")),
            "{sub} is documented"
        );
    }
    assert!(now.contains("--metrics"), "the new options are in it");
}

/// The shell block between the README's quickstart markers.
fn quick_start() -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let start = readme
        .find("<!-- quickstart")
        .expect("the README marks its quick start");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = block[open..].find("```").expect("the block ends") + open;
    block[open..close].to_owned()
}

#[test]
fn the_quick_start_runs_as_written() {
    if !kernel_tests_enabled("the_quick_start_runs_as_written") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The same commands, in a directory of the test's own instead of /tmp/vigil-demo.
    let script = quick_start().replace(
        "/tmp/vigil-demo",
        &dir.path().join("demo").to_string_lossy(),
    );
    let bin_dir = sensor_bin().parent().expect("bin dir").to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Whatever happens, the sensor the script started is stopped.
    let guarded =
        format!("set -eu\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}\nwait\n");
    let out = Command::new("bash")
        .args(["-c", &guarded])
        .env("PATH", path)
        .env_remove("VIGIL_STATE")
        .output()
        .expect("bash runs");
    let said = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the quick start failed ({}):\n{said}\n{}\nsensor log:\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for shown in [
        "Setuid or setgid bit set on a file",
        "INCIDENT",
        "Quarantine",
        "restored",
    ] {
        assert!(
            said.contains(shown),
            "the quick start shows {shown:?}:\n{said}"
        );
    }
    let restored = dir.path().join("demo-suid");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&restored)
            .expect("the file is back")
            .permissions(),
    );
    assert_eq!(
        mode & 0o4000,
        0o4000,
        "given back as it was, setuid bit included"
    );
}

#[test]
fn the_book_builds() {
    let root = workspace();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let run = Command::new("mdbook")
        .args(["build", "--dest-dir"])
        .arg(out_dir.path())
        .arg(root.join("docs"))
        .output();
    let Ok(out) = run else {
        assert!(
            std::env::var_os("VIGIL_ALLOW_SKIP").is_some(),
            "mdbook is missing: `cargo xtask test` installs it (cargo install mdbook)"
        );
        vigil_tests::skipped("the_book_builds", "no mdbook on the PATH");
        return;
    };
    assert!(
        out.status.success(),
        "mdbook build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "index.html",
        "guides/policy.html",
        "reference/cli.html",
        "reference/outputs.html",
    ] {
        assert!(out_dir.path().join(page).is_file(), "{page} was built");
    }
}
