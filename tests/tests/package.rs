//! The Debian packages as an administrator meets them: their files and modes, an install
//! into a throwaway root by the real dpkg (maintainer scripts included), the installed
//! sensor checking its installed rules and policy, an upgrade that keeps a changed policy,
//! remove and purge, and lintian.
//!
//! The root is empty but for dpkg's database, so dependencies are not installed in it
//! (`--force-depends`; lintian checks they are declared), and the maintainer scripts run on
//! this host with `DPKG_ROOT` set (`--force-script-chrootless`), which they honour.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test stops loudly at the first thing that fails"
)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// `target/debian`, where `cargo xtask package` (and `cargo xtask test`) put the packages.
fn deb(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .ancestors()
        .nth(3)
        .map(|t| t.join("debian"))
        .expect("target directory");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the packages first with `cargo xtask package` (`cargo xtask test` does)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} package in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().expect("one package")
}

/// Runs `program args`, which must succeed; returns its output.
fn ok(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A root holding only an empty dpkg database.
struct Root(tempfile::TempDir);

impl Root {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vigil-root-")
            .tempdir()
            .expect("tempdir");
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "var/log",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).expect("dpkg's directories");
        }
        std::fs::write(dir.path().join("var/lib/dpkg/status"), "").expect("dpkg's status");
        Self(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    /// `dpkg --root ROOT ARGS`, which must succeed.
    fn dpkg(&self, args: &[&str]) -> Output {
        let root = format!("--root={}", self.0.path().display());
        let mut all = vec![
            root.as_str(),
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
        ];
        all.extend_from_slice(args);
        ok("dpkg", &all)
    }

    fn version(&self, package: &str) -> String {
        let root = format!("--admindir={}", self.path("var/lib/dpkg").display());
        text(&ok("dpkg-query", &[&root, "-W", "-f=${Version}", package]))
    }
}

/// A copy of `deb` that says it is version `version`: the same contents, an upgrade.
fn as_version(deb: &Path, version: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    ok(
        "dpkg-deb",
        &["-R", &deb.to_string_lossy(), &tree.to_string_lossy()],
    );
    let control = tree.join("DEBIAN/control");
    let fields = std::fs::read_to_string(&control).expect("control");
    let bumped: String = fields
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(bumped, fields, "the control file names a version");
    std::fs::write(&control, bumped).expect("control");
    let out = dir.join(format!("upgrade-{version}.deb"));
    ok(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-b",
            &tree.to_string_lossy(),
            &out.to_string_lossy(),
        ],
    );
    out
}

#[test]
fn the_packages_carry_stripped_binaries_their_units_and_the_policy_and_rules_as_conffiles() {
    let sensor = deb("vigil-sensor");
    let listing = text(&ok("dpkg-deb", &["-c", &sensor.to_string_lossy()]));
    let entry = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_owned()
    };
    for (path, perms) in [
        ("./usr/bin/vigil-sensor", "-rwxr-xr-x"),
        ("./etc/vigil/policy.toml", "-rw-r--r--"),
        ("./etc/vigil/rules/setuid-bit.yml", "-rw-r--r--"),
        ("./lib/systemd/system/vigil-sensor.service", "-rw-r--r--"),
    ] {
        let line = entry(path);
        assert!(
            line.starts_with(perms) && (line.contains("root/root") || line.contains(" 0/0 ")),
            "{path}: {line}"
        );
    }
    let conffiles = text(&ok(
        "dpkg-deb",
        &["--info", &sensor.to_string_lossy(), "conffiles"],
    ));
    for f in ["/etc/vigil/policy.toml", "/etc/vigil/rules/setuid-bit.yml"] {
        assert!(
            conffiles.lines().any(|l| l == f),
            "{f} is not a conffile:\n{conffiles}"
        );
    }
    let controller = deb("vigil-controller");
    let listing = text(&ok("dpkg-deb", &["-c", &controller.to_string_lossy()]));
    assert!(listing.contains("./usr/bin/vigil-controller"), "{listing}");
    assert!(
        listing.contains("./lib/systemd/system/vigil-controller.service"),
        "{listing}"
    );

    // Stripped: no debug sections are left, and what ships is a fraction of the build.
    let dir = tempfile::tempdir().expect("tempdir");
    for (pkg, bin) in [(&sensor, "vigil-sensor"), (&controller, "vigil-controller")] {
        let tree = dir.path().join(bin);
        ok(
            "dpkg-deb",
            &["-x", &pkg.to_string_lossy(), &tree.to_string_lossy()],
        );
        let binary = tree.join("usr/bin").join(bin);
        let sections = text(&ok("readelf", &["-S", "-W", &binary.to_string_lossy()]));
        assert!(
            !sections.contains(".debug_info"),
            "{bin} ships with debug info:\n{sections}"
        );
        let size = std::fs::metadata(&binary).expect("binary").len();
        assert!(size < 40 << 20, "{bin} is {size} bytes");
    }
}

#[test]
fn an_install_checks_its_rules_and_policy_an_upgrade_keeps_a_changed_policy_and_purge_removes_state()
 {
    let (sensor, controller) = (deb("vigil-sensor"), deb("vigil-controller"));
    let root = Root::new();
    let installed = root.dpkg(&[
        "-i",
        &sensor.to_string_lossy(),
        &controller.to_string_lossy(),
    ]);
    let said = text(&installed);
    assert!(
        said.contains("vigil-sensor: enabled, not started"),
        "the install says the sensor was not started here: {said}"
    );

    // What the scripts made: the state directories, private, and the units enabled.
    for (state, unit) in [
        ("var/lib/vigil", "vigil-sensor.service"),
        ("var/lib/vigil-controller", "vigil-controller.service"),
    ] {
        assert_eq!(mode(&root.path(state)), 0o700, "{state}");
        let link = root
            .path("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert_eq!(
            std::fs::read_link(&link).expect("the unit is enabled"),
            Path::new("/lib/systemd/system").join(unit)
        );
        assert!(root.path("lib/systemd/system").join(unit).is_file());
    }

    // The installed sensor passes its own rules' tests and its own policy.
    let bin = root.path("usr/bin/vigil-sensor");
    let bin = bin.to_string_lossy();
    let rules = root.path("etc/vigil/rules");
    let tested = text(&ok(&bin, &["rules", "test", &rules.to_string_lossy()]));
    assert!(!tested.contains("FAIL"), "{tested}");
    let policy = root.path("etc/vigil/policy.toml");
    let checked = text(&ok(&bin, &["policy", "check", &policy.to_string_lossy()]));
    assert!(checked.contains("valid"), "{checked}");
    ok(
        &root.path("usr/bin/vigil-controller").to_string_lossy(),
        &["--version"],
    );

    // A person changes the policy; the upgrade keeps their file, and it still checks.
    let shipped = std::fs::read_to_string(&policy).expect("policy");
    let changed = format!("# tuned for this host by its administrator\n{shipped}");
    std::fs::write(&policy, &changed).expect("change the policy");
    let before = root.version("vigil-sensor");
    let work = tempfile::tempdir().expect("tempdir");
    let next = format!("{before}+upgrade1");
    let upgrade = as_version(&sensor, &next, work.path());
    root.dpkg(&["-i", &upgrade.to_string_lossy()]);
    assert_eq!(
        root.version("vigil-sensor"),
        next,
        "the upgrade is installed"
    );
    assert_eq!(
        std::fs::read_to_string(&policy).expect("policy"),
        changed,
        "the upgrade kept the changed policy"
    );
    assert!(
        !root.path("etc/vigil/policy.toml.dpkg-new").exists(),
        "nothing was left for a person to merge: the package's policy did not change"
    );
    ok(&bin, &["policy", "check", &policy.to_string_lossy()]);

    // Remove keeps the state and the changed policy; purge removes both.
    std::fs::write(root.path("var/lib/vigil/actions.jsonl"), "").expect("a journal");
    root.dpkg(&["-r", "vigil-sensor"]);
    assert!(!root.path("usr/bin/vigil-sensor").exists());
    assert!(
        root.path("var/lib/vigil/actions.jsonl").exists(),
        "remove keeps the state"
    );
    assert!(policy.exists(), "remove keeps the conffiles");
    root.dpkg(&["-P", "vigil-sensor", "vigil-controller"]);
    for gone in [
        "var/lib/vigil",
        "var/lib/vigil-controller",
        "etc/vigil/policy.toml",
    ] {
        assert!(!root.path(gone).exists(), "purge removes {gone}");
    }
    assert!(
        !root
            .path("etc/systemd/system/multi-user.target.wants/vigil-sensor.service")
            .exists()
    );
}

#[test]
fn lintian_finds_no_errors_in_either_package() {
    const TEST: &str = "lintian_finds_no_errors_in_either_package";
    if !vigil_tests::program_installed(TEST, "/usr/bin/lintian", "lintian") {
        return;
    }
    for name in ["vigil-sensor", "vigil-controller"] {
        let pkg = deb(name);
        let out = Command::new("lintian")
            .args(["--fail-on", "error", "--no-tag-display-limit"])
            .arg(&pkg)
            .output()
            .expect("lintian runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !said.lines().any(|l| l.starts_with("E: ")),
            "lintian on {name}: {}\n{said}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
