//! Directory snapshot records: one row per snapshot, as versioned JSON.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{RecordError, Store, StoreError, decode_record, encode};
use crate::clock::{from_unix_millis, to_unix_millis};
use crate::id::{DirSnapshotId, SandboxId};
use crate::volume::DirSnapshot;

/// The record format written today.
const DIR_SNAPSHOT_RECORD_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct DirSnapshotRecord {
    version: u32,
    id: String,
    sandbox: String,
    path: String,
    sha256: String,
    size_bytes: u64,
    entries: u64,
    created_at_ms: i64,
}

impl DirSnapshotRecord {
    fn from_domain(snapshot: &DirSnapshot) -> Self {
        Self {
            version: DIR_SNAPSHOT_RECORD_VERSION,
            id: snapshot.id.to_string(),
            sandbox: snapshot.sandbox.to_string(),
            path: snapshot.path.clone(),
            sha256: snapshot.sha256.clone(),
            size_bytes: snapshot.size_bytes,
            entries: snapshot.entries,
            created_at_ms: to_unix_millis(snapshot.created_at),
        }
    }

    fn into_domain(self) -> Result<DirSnapshot, RecordError> {
        if self.version != DIR_SNAPSHOT_RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        Ok(DirSnapshot {
            id: self
                .id
                .parse::<DirSnapshotId>()
                .map_err(|_| RecordError::Field { field: "id" })?,
            sandbox: self
                .sandbox
                .parse::<SandboxId>()
                .map_err(|_| RecordError::Field { field: "sandbox" })?,
            path: self.path,
            sha256: self.sha256,
            size_bytes: self.size_bytes,
            entries: self.entries,
            created_at: from_unix_millis(self.created_at_ms),
        })
    }
}

impl Store {
    /// Records a directory snapshot.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn put_dir_snapshot(&self, snapshot: &DirSnapshot) -> Result<(), StoreError> {
        let json = encode(
            snapshot.id.as_str(),
            &DirSnapshotRecord::from_domain(snapshot),
        )?;
        self.connection()
            .execute(
                "INSERT OR REPLACE INTO dir_snapshots (id, record) VALUES (?1, ?2)",
                params![snapshot.id.as_str(), json],
            )
            .map_err(|source| StoreError::Query {
                op: "put directory snapshot",
                source,
            })?;
        Ok(())
    }

    /// Directory snapshot `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn dir_snapshot(&self, id: &DirSnapshotId) -> Result<Option<DirSnapshot>, StoreError> {
        let json: Option<String> = self
            .connection()
            .query_row(
                "SELECT record FROM dir_snapshots WHERE id = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                op: "get directory snapshot",
                source,
            })?;
        json.map(|json| decode(id.as_str(), &json)).transpose()
    }

    /// Every directory snapshot, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn dir_snapshots(&self) -> Result<Vec<DirSnapshot>, StoreError> {
        let connection = self.connection();
        let query_error = |source| StoreError::Query {
            op: "list directory snapshots",
            source,
        };
        let mut statement = connection
            .prepare("SELECT id, record FROM dir_snapshots")
            .map_err(query_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(query_error)?;
        let mut snapshots = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(query_error)?;
            snapshots.push(decode(&id, &json)?);
        }
        snapshots.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(snapshots)
    }

    /// Removes directory snapshot `id`'s record; removing an absent one succeeds.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn delete_dir_snapshot(&self, id: &DirSnapshotId) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM dir_snapshots WHERE id = ?1", [id.as_str()])
            .map_err(|source| StoreError::Query {
                op: "delete directory snapshot",
                source,
            })?;
        Ok(())
    }
}

fn decode(key: &str, json: &str) -> Result<DirSnapshot, StoreError> {
    decode_record(key, json, DirSnapshotRecord::into_domain)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn test_dir_snapshots_round_trip() {
        let store = Store::in_memory().unwrap();
        let snapshot = DirSnapshot {
            id: DirSnapshotId::generate().unwrap(),
            sandbox: SandboxId::generate().unwrap(),
            path: "/home/user/work".into(),
            sha256: "ab".repeat(32),
            size_bytes: 10_240,
            entries: 3,
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        store.put_dir_snapshot(&snapshot).unwrap();
        assert_eq!(
            store.dir_snapshot(&snapshot.id).unwrap(),
            Some(snapshot.clone())
        );
        assert_eq!(store.dir_snapshots().unwrap(), vec![snapshot.clone()]);
        store.delete_dir_snapshot(&snapshot.id).unwrap();
        assert_eq!(store.dir_snapshot(&snapshot.id).unwrap(), None);
    }
}
