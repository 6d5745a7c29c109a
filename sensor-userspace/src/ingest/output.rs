//! The JSON-lines event sink (`--events-out FILE|-`), and the writer the alert export
//! (`--alerts-out`) shares.

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::{ingest::pipeline::Sink, model::events::Event};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open the output {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes one JSON object per line, buffered; flushed on every drained batch.
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
    failed: bool,
}

impl JsonLines {
    /// `-` is standard output; anything else is a file, appended to.
    pub fn open(target: &Path) -> Result<Self, OutputError> {
        let w: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .map_err(|source| OutputError::Open {
                    path: target.to_owned(),
                    source,
                })?;
            Box::new(f)
        };
        Ok(Self {
            out: BufWriter::with_capacity(1 << 16, w),
            failed: false,
        })
    }

    /// Writes `v` as one line; a failed write is logged once, not returned.
    pub fn write<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        let r = serde_json::to_writer(&mut self.out, v)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = r {
            self.report(&e);
        }
    }

    fn report(&mut self, e: &dyn std::fmt::Display) {
        if !self.failed {
            tracing::error!(error = %e, "writing events failed; further write errors are not logged");
            self.failed = true;
        }
    }
}

impl Sink for JsonLines {
    fn publish(&mut self, event: &Event) {
        self.write(event);
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.report(&e);
        }
    }
}
