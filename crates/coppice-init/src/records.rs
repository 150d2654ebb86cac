//! A runtime's per-sandbox records: small JSON files, replaced atomically (written aside, then
//! renamed), so a crash leaves either the old record or the new one, and read back after a
//! daemon restart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file system refused.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a record of the expected shape.
    #[error("corrupt record {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The sandboxes that have a directory in `run_dir` (entries named like a sandbox id),
/// sorted.
///
/// # Errors
/// [`RecordError::Io`] when the run dir cannot be listed.
pub fn sandbox_dirs(run_dir: &Path) -> Result<Vec<coppice_core::SandboxId>, RecordError> {
    let entries = fs::read_dir(run_dir).map_err(|source| RecordError::Io {
        op: "list",
        path: run_dir.to_owned(),
        source,
    })?;
    let mut ids: Vec<coppice_core::SandboxId> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The record at `path`; `None` when there is none.
///
/// # Errors
/// [`RecordError`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RecordError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the record at `path` with `value`.
///
/// # Errors
/// [`RecordError`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec(value).map_err(|source| RecordError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, bytes)
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(|source| RecordError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_record_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json(&path, &vec![1u32, 2]).unwrap();
        write_json(&path, &vec![3u32]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![3]));
        assert!(!path.with_extension("tmp").exists());
        fs::create_dir(dir.path().join("b2")).unwrap();
        fs::create_dir(dir.path().join("a1")).unwrap();
        fs::create_dir(dir.path().join("Not An Id")).unwrap();
        let ids: Vec<String> = sandbox_dirs(dir.path())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["a1", "b2"]);
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            read_json::<Vec<u32>>(&path),
            Err(RecordError::Corrupt { .. })
        ));
    }
}
