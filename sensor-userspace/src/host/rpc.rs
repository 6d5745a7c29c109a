//! One JSON line each way over a local Unix socket: the sensor's control socket and the
//! controller's operator socket both speak it. The socket is mode 0600 and a peer that is
//! neither root nor the server's own user is refused before a byte is read; a request is
//! bounded in size and in the time it may take to arrive. A server may send interim lines
//! (progress) before its answer; the client hands them to the caller as they come.

use std::{
    io::{BufRead as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// How long a connected peer may take to send its request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another server already answers on {0}")]
    InUse(PathBuf),
    #[error("nothing answers on {path} ({source})")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the socket {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} closed without an answer")]
    NoAnswer { path: PathBuf },
    #[error("the answer on {path} cannot be read: {source}")]
    BadAnswer {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Why a request line was not read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no request within {} s", REQUEST_DEADLINE.as_secs())]
    TimedOut,
    #[error("the request is over {0} bytes")]
    TooLong(usize),
    #[error("malformed request: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Binds `path` with mode 0600, replacing a stale socket but never a live one.
pub fn bind(path: &Path) -> Result<UnixListener, RpcError> {
    let err = |source| RpcError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(RpcError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// The next connection from a trusted peer, with its uid; others are refused and logged.
pub async fn accept(listener: &UnixListener) -> (UnixStream, u32) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "local socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match crate::host::peer::trusted(&stream) {
            Some(uid) => return (stream, uid),
            None => tracing::warn!("refused a local connection from an unauthorised user"),
        }
    }
}

/// Reads one request line of at most `max` bytes, within [`REQUEST_DEADLINE`].
pub async fn read_request<T: DeserializeOwned>(
    read: OwnedReadHalf,
    max: usize,
) -> Result<T, RequestError> {
    let mut line = Vec::new();
    let mut r = tokio::io::BufReader::new(read.take(max as u64 + 1));
    tokio::time::timeout(REQUEST_DEADLINE, r.read_until(b'\n', &mut line))
        .await
        .map_err(|_| RequestError::TimedOut)??;
    if line.len() > max {
        return Err(RequestError::TooLong(max));
    }
    Ok(serde_json::from_slice(&line)?)
}

/// Writes `v` as one line.
pub async fn write_line<T: Serialize>(write: &mut OwnedWriteHalf, v: &T) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(v).map_err(std::io::Error::from)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Sends `req` and reads lines until one that `interim` does not take (it returns false):
/// that line is the answer. Each read waits at most `timeout`.
pub fn call<Req: Serialize, Resp: DeserializeOwned>(
    socket: &Path,
    req: &Req,
    timeout: Duration,
    mut interim: impl FnMut(&Resp) -> bool,
) -> Result<Resp, RpcError> {
    let io = |source| RpcError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| RpcError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = std::io::BufReader::new(stream);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Err(RpcError::NoAnswer {
                path: socket.to_owned(),
            });
        }
        let resp: Resp = serde_json::from_slice(&line).map_err(|source| RpcError::BadAnswer {
            path: socket.to_owned(),
            source,
        })?;
        if !interim(&resp) {
            return Ok(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_that_never_arrives_is_timed_out_and_a_live_socket_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = bind(&path).expect("bind");
        let idle = UnixStream::connect(&path).await.expect("connect");
        let (stream, _) = accept(&listener).await;
        let (read, _write) = stream.into_split();
        tokio::time::pause();
        let got = read_request::<serde_json::Value>(read, 1024).await;
        assert!(matches!(got, Err(RequestError::TimedOut)), "{got:?}");
        drop(idle);
        tokio::time::resume();
        assert!(matches!(bind(&path), Err(RpcError::InUse(_))));
    }
}
