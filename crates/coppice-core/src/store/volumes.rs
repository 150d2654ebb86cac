//! Volume records: one row per volume, its name unique, the rest as versioned JSON.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{RecordError, Store, StoreError, decode_record, encode};
use crate::clock::{from_unix_millis, to_unix_millis};
use crate::id::{VolumeId, VolumeName};
use crate::sandbox::AccessToken;
use crate::volume::Volume;

/// The volume record format written today.
const VOLUME_RECORD_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct VolumeRecord {
    version: u32,
    id: String,
    name: String,
    token: String,
    created_at_ms: i64,
}

impl VolumeRecord {
    fn from_domain(volume: &Volume) -> Self {
        Self {
            version: VOLUME_RECORD_VERSION,
            id: volume.id.to_string(),
            name: volume.name.to_string(),
            token: volume.token.expose().to_owned(),
            created_at_ms: to_unix_millis(volume.created_at),
        }
    }

    fn into_domain(self) -> Result<Volume, RecordError> {
        if self.version != VOLUME_RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        Ok(Volume {
            id: self
                .id
                .parse::<VolumeId>()
                .map_err(|_| RecordError::Field { field: "id" })?,
            name: self
                .name
                .parse::<VolumeName>()
                .map_err(|_| RecordError::Field { field: "name" })?,
            token: AccessToken::from_persisted(self.token),
            created_at: from_unix_millis(self.created_at_ms),
        })
    }
}

fn decode(key: &str, json: &str) -> Result<Volume, StoreError> {
    decode_record(key, json, VolumeRecord::into_domain)
}

impl Store {
    /// Inserts a new volume. Returns `false`, writing nothing, when its name is taken.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn insert_volume(&self, volume: &Volume) -> Result<bool, StoreError> {
        let json = encode(volume.id.as_str(), &VolumeRecord::from_domain(volume))?;
        let inserted = self
            .connection()
            .execute(
                "INSERT INTO volumes (id, name, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![volume.id.as_str(), volume.name.as_str(), json],
            )
            .map_err(|source| StoreError::Query {
                op: "insert volume",
                source,
            })?;
        Ok(inserted == 1)
    }

    /// The volume with id `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn volume(&self, id: &VolumeId) -> Result<Option<Volume>, StoreError> {
        self.volume_where("id", id.as_str())
    }

    /// The volume named `name`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn volume_by_name(&self, name: &VolumeName) -> Result<Option<Volume>, StoreError> {
        self.volume_where("name", name.as_str())
    }

    fn volume_where(&self, column: &str, value: &str) -> Result<Option<Volume>, StoreError> {
        // `column` is one of two literals above, never caller input.
        let query = format!("SELECT record FROM volumes WHERE {column} = ?1");
        let json: Option<String> = self
            .connection()
            .query_row(&query, [value], |row| row.get(0))
            .optional()
            .map_err(|source| StoreError::Query {
                op: "get volume",
                source,
            })?;
        json.map(|json| decode(value, &json)).transpose()
    }

    /// Every volume, by name.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn volumes(&self) -> Result<Vec<Volume>, StoreError> {
        let connection = self.connection();
        let query_error = |source| StoreError::Query {
            op: "list volumes",
            source,
        };
        let mut statement = connection
            .prepare("SELECT id, record FROM volumes ORDER BY name")
            .map_err(query_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(query_error)?;
        let mut volumes = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(query_error)?;
            volumes.push(decode(&id, &json)?);
        }
        Ok(volumes)
    }

    /// Removes volume `id`'s record; removing an absent one succeeds.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn delete_volume(&self, id: &VolumeId) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM volumes WHERE id = ?1", [id.as_str()])
            .map_err(|source| StoreError::Query {
                op: "delete volume",
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn volume(name: &str) -> Volume {
        Volume {
            id: VolumeId::generate().unwrap(),
            name: name.parse().unwrap(),
            token: AccessToken::generate().unwrap(),
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn test_volumes_round_trip_and_names_stay_unique() {
        let store = Store::in_memory().unwrap();
        let data = volume("data");
        assert!(store.insert_volume(&data).unwrap());
        assert!(!store.insert_volume(&volume("data")).unwrap());
        assert!(store.insert_volume(&volume("cache")).unwrap());
        assert_eq!(store.volume(&data.id).unwrap(), Some(data.clone()));
        assert_eq!(
            store.volume_by_name(&data.name).unwrap().map(|v| v.id),
            Some(data.id.clone())
        );
        let names: Vec<String> = store
            .volumes()
            .unwrap()
            .iter()
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(names, ["cache", "data"]);
        store.delete_volume(&data.id).unwrap();
        store.delete_volume(&data.id).unwrap();
        assert_eq!(store.volume(&data.id).unwrap(), None);
        assert!(store.insert_volume(&volume("data")).unwrap());
    }
}
