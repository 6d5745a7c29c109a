//! A throwaway PostgreSQL server for the benchmarks (Debian's `postgresql-15`): a cluster
//! made in a temporary directory and run as the `postgres` user on a loopback port, stopped
//! when dropped. The tests have their own, in `tests/src/postgres.rs`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::util;

/// Debian's server programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Server {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// `cmd` run as the `postgres` user.
fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]);
    cmd
}

impl Server {
    pub fn start() -> Result<Self> {
        crate::apt::ensure(&[("postgresql-15", "/usr/lib/postgresql/15/bin/initdb")])?;
        let dir = tempfile::Builder::new()
            .prefix("vigil-bench-pg-")
            .tempdir()?;
        let data = dir.path().join("data");
        util::run({
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(dir.path());
            c
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let initdb = format!("{BIN}/initdb");
        let mut init = as_postgres(&initdb);
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        ]);
        util::run(init).context("initdb")?;
        let pg_ctl = format!("{BIN}/pg_ctl");
        let mut start = as_postgres(&pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
            ))
            .arg("start");
        util::run(start).context("start PostgreSQL")?;
        let s = Self { dir, port };
        let psql = format!("{BIN}/psql");
        let mut create = Command::new(psql);
        create
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-X",
            ])
            .args(["-c", "CREATE DATABASE vigil"]);
        util::run(create).context("create the database")?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/vigil", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pg_ctl = format!("{BIN}/pg_ctl");
        let mut stop = as_postgres(&pg_ctl);
        stop.arg("-D").arg(self.data()).args(["-m", "fast", "stop"]);
        let _ = util::run(stop);
    }
}
