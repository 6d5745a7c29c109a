//! A real PostgreSQL server from Debian's packages, made for one test: `initdb` in a
//! temporary directory as the `postgres` user, listening on a loopback port with trust
//! authentication, stopped when dropped. The benchmarks (`cargo xtask bench`) start theirs
//! with it too.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Where Debian puts the server's programs, one directory per major version.
const LIB: &str = "/usr/lib/postgresql";

pub struct Postgres {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest server installed, as its `bin` directory.
pub fn installed() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(LIB)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// True when a PostgreSQL test can run: as root (it runs the server as `postgres`), with the
/// server installed. Otherwise the test fails, naming why, unless skipping was allowed: then
/// it is listed as skipped.
pub fn enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "PostgreSQL tests run the server as the postgres user and must run as root"
    } else if installed().is_none() {
        "no PostgreSQL server under /usr/lib/postgresql (Debian's postgresql-15; cargo xtask setup installs it)"
    } else {
        return true;
    };
    assert!(
        std::env::var_os("VIGIL_ALLOW_SKIP").is_some(),
        "{test}: {why} (or `cargo xtask test --allow-skip` to skip it visibly)"
    );
    crate::skipped(test, why);
    false
}

/// The uid and gid of the `postgres` account.
fn postgres_user() -> Result<(u32, u32)> {
    let name = c"postgres";
    // SAFETY: getpwnam with a NUL-terminated name; the record is read before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("there is no postgres user: install postgresql-15 (cargo xtask setup)");
    }
    // SAFETY: non-null, as checked.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Runs `cmd` and fails with its output unless it succeeded.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Postgres {
    /// Makes a cluster and starts its server; returns once it answers queries.
    pub fn start() -> Result<Self> {
        let bin = installed().with_context(|| {
            format!("no PostgreSQL server under {LIB}: install postgresql-15 (cargo xtask setup)")
        })?;
        let (uid, gid) = postgres_user()?;
        let dir = tempfile::Builder::new().prefix("vigil-pg-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        run(Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .uid(uid)
            .gid(gid))?;
        let port = crate::free_tcp_addr().port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log)?;
        std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=200"])
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("start postgres")?;
        let mut pg = Self {
            child,
            dir,
            bin,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if pg.psql("postgres", "SELECT 1").is_ok() {
                return Ok(pg);
            }
            if let Some(st) = pg.child.try_wait()? {
                bail!("postgres exited during start-up ({st}):\n{}", pg.log());
            }
            if Instant::now() > deadline {
                bail!("postgres did not answer within 60 s:\n{}", pg.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs `sql` in database `db` with psql; its output, unaligned.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        run(Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-A",
                "-t",
                "-c",
                sql,
            ]))
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name: &str) -> Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: the fast shutdown, which ends the backends too.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
