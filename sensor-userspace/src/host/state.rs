//! The state directory: where the control socket (and, later, journals and stores) live.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state directory, created (mode 0700) and proven writable.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn prepare(root: &Path) -> Result<Self, StateError> {
        let create = |source| StateError::Create {
            path: root.to_owned(),
            source,
        };
        std::fs::create_dir_all(root).map_err(create)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
        let probe = root.join(".write-test");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|source| StateError::NotWritable {
                path: root.to_owned(),
                source,
            })?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// A state directory used only to find the socket of a running sensor.
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = StateDir::prepare(&file.join("state")).expect_err("must fail");
        assert!(
            err.to_string()
                .contains("cannot create the state directory"),
            "{err}"
        );
    }

    #[test]
    fn created_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateDir::prepare(&dir.path().join("a/b")).expect("prepare");
        let mode = std::fs::metadata(s.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
