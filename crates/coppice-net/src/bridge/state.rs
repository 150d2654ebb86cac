//! Attachments on disk, one small JSON file per sandbox, so that a restarted daemon knows
//! which endpoint and which policy each surviving sandbox has.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use coppice_core::SandboxId;
use coppice_core::spec::NetworkSpec;
use serde::{Deserialize, Serialize};

/// Bumped when the record changes shape; other versions are ignored with a warning.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    index: u32,
    allow_internet: bool,
    allow_out: Vec<String>,
    deny_out: Vec<String>,
    /// The conntrack mark of flows to its pinned addresses (0: none yet).
    #[serde(default)]
    mark: u32,
}

/// One recorded attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) id: SandboxId,
    pub(crate) index: u32,
    pub(crate) spec: NetworkSpec,
    pub(crate) mark: u32,
}

/// The directory of records.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Records under `dir`, made (root-only) if missing.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &SandboxId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Records `id` at `index` with `spec` and its pin `mark`, atomically.
    pub(crate) fn write(
        &self,
        id: &SandboxId,
        index: u32,
        spec: &NetworkSpec,
        mark: u32,
    ) -> io::Result<()> {
        let record = Record {
            version: VERSION,
            index,
            mark,
            allow_internet: spec.allow_internet,
            allow_out: spec.allow_out.clone(),
            deny_out: spec.deny_out.clone(),
        };
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let path = self.path(id);
        let partial = path.with_extension("json.partial");
        // No fsync: the record only has to survive the daemon, and a host that goes down
        // takes the sandbox it describes with it.
        let mut file = fs::File::create(&partial)?;
        file.write_all(&bytes)?;
        fs::rename(&partial, &path)
    }

    /// Forgets `id`; forgetting an unknown sandbox succeeds.
    pub(crate) fn remove(&self, id: &SandboxId) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Every readable record; unreadable ones are logged and skipped (and removed, since
    /// nothing could ever use them).
    pub(crate) fn load(&self) -> io::Result<Vec<Recorded>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".json") else {
                let _ = fs::remove_file(&path);
                continue;
            };
            match Self::read(&path, stem) {
                Ok(recorded) => found.push(recorded),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason, "dropping an unreadable network record");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|recorded| recorded.index);
        Ok(found)
    }

    fn read(path: &Path, stem: &str) -> Result<Recorded, String> {
        let id: SandboxId = stem.parse().map_err(|_| "not a sandbox id".to_owned())?;
        let bytes = fs::read(path).map_err(|error| error.to_string())?;
        let record: Record = serde_json::from_slice(&bytes).map_err(|error| error.to_string())?;
        if record.version != VERSION {
            return Err(format!("record version {}", record.version));
        }
        Ok(Recorded {
            id,
            index: record.index,
            mark: record.mark,
            spec: NetworkSpec {
                allow_internet: record.allow_internet,
                allow_out: record.allow_out,
                deny_out: record.deny_out,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_records_round_trip_and_garbage_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let id: SandboxId = "abc".parse().unwrap();
        let spec = NetworkSpec {
            allow_internet: false,
            allow_out: vec!["10.0.0.0/8".into()],
            deny_out: Vec::new(),
        };
        state.write(&id, 7, &spec, 5).unwrap();
        fs::write(dir.path().join("junk.json"), b"{").unwrap();

        let loaded = state.load().unwrap();

        assert_eq!(
            loaded,
            vec![Recorded {
                id: id.clone(),
                index: 7,
                spec,
                mark: 5,
            }]
        );
        assert!(!dir.path().join("junk.json").exists());
        state.remove(&id).unwrap();
        state.remove(&id).unwrap();
        assert!(state.load().unwrap().is_empty());
    }
}
