//! Sandbox records and lifecycle events persisted in SQLite (WAL) under the data dir.
//!
//! Persisted records are separate serde structs with an explicit `version`, so the domain
//! types never derive `Serialize`. Every call blocks; the manager calls them off the async
//! runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::clock::{from_unix_millis, to_unix_millis};
use crate::event::{EventKind, LifecycleEvent, Reason};
use crate::id::{SandboxId, TemplateId};
use crate::runtime::SandboxEndpoints;
use crate::sandbox::{AccessToken, Sandbox};
use crate::spec::{NetworkSpec, SandboxSpec, TimeoutAction};
use crate::state::{PauseMode, SandboxState};
use crate::volume::VolumeMount;

mod build_logs;
pub use build_logs::MAX_KEPT_LOG_LINES;
mod dir_snapshots;
mod volumes;

/// The record format written today.
const RECORD_VERSION: u32 = 1;

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the state database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("state database query {op} failed")]
    Query {
        /// Which query.
        op: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("sandbox record {id} is not readable")]
    Record {
        /// The record's key.
        id: String,
        /// The cause.
        #[source]
        source: RecordError,
    },
}

/// Why a stored record could not be turned back into a domain value.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Bad JSON.
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
    /// A record version this build does not know.
    #[error("unknown record version {0}")]
    Version(u32),
    /// A field that does not parse.
    #[error("invalid field {field}")]
    Field {
        /// The field name.
        field: &'static str,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct SandboxRecord {
    version: u32,
    id: String,
    template: String,
    vcpus: u32,
    memory_mb: u32,
    disk_mb: u32,
    env: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    timeout_ms: u64,
    auto_pause: bool,
    allow_internet: bool,
    allow_out: Vec<String>,
    deny_out: Vec<String>,
    state: String,
    created_at_ms: i64,
    end_at_ms: i64,
    control_socket: Option<PathBuf>,
    envd_socket: Option<PathBuf>,
    /// Absent in records written before tokens existed.
    #[serde(default)]
    access_token: Option<String>,
    /// With `auto_pause`: whether the timeout's pause keeps memory.
    #[serde(default = "default_true")]
    auto_pause_memory: bool,
    #[serde(default)]
    auto_resume: bool,
    /// What a paused sandbox kept (`memory` or `filesystem`).
    #[serde(default)]
    pause_mode: Option<String>,
    /// Volumes mounted at create: `(name, path)`.
    #[serde(default)]
    volume_mounts: Vec<(String, PathBuf)>,
    #[serde(default = "default_true")]
    public_traffic: bool,
    #[serde(default)]
    traffic_token: Option<String>,
    /// The template's default user and working directory, fixed at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_workdir: Option<String>,
    /// The template's service, fixed at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_user: Option<String>,
}

fn default_true() -> bool {
    true
}

impl SandboxRecord {
    fn from_domain(sandbox: &Sandbox) -> Self {
        let spec = &sandbox.spec;
        Self {
            version: RECORD_VERSION,
            id: sandbox.id.to_string(),
            template: spec.template.to_string(),
            vcpus: spec.vcpus,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            env: spec.env.clone(),
            metadata: spec.metadata.clone(),
            timeout_ms: u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX),
            auto_pause: matches!(spec.on_timeout, TimeoutAction::Pause(_)),
            auto_pause_memory: spec.on_timeout != TimeoutAction::Pause(PauseMode::Filesystem),
            auto_resume: spec.auto_resume,
            pause_mode: sandbox.pause_mode.map(|mode| mode.as_str().to_owned()),
            volume_mounts: spec
                .volume_mounts
                .iter()
                .map(|mount| (mount.name.to_string(), mount.path.clone()))
                .collect(),
            allow_internet: spec.network.allow_internet,
            allow_out: spec.network.allow_out.clone(),
            deny_out: spec.network.deny_out.clone(),
            state: sandbox.state.as_str().to_owned(),
            created_at_ms: to_unix_millis(sandbox.created_at),
            end_at_ms: to_unix_millis(sandbox.end_at),
            control_socket: sandbox.endpoints.as_ref().map(|e| e.control_socket.clone()),
            envd_socket: sandbox.endpoints.as_ref().map(|e| e.envd_socket.clone()),
            access_token: sandbox
                .access_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            public_traffic: spec.public_traffic,
            traffic_token: sandbox
                .traffic_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            default_user: spec.defaults.user.clone(),
            default_workdir: spec.defaults.workdir.clone(),
            service_command: spec.service.as_ref().map(|s| s.command.clone()),
            service_ready: spec.service.as_ref().and_then(|s| s.ready.clone()),
            service_user: spec.service.as_ref().and_then(|s| s.user.clone()),
        }
    }

    fn into_domain(self) -> Result<Sandbox, RecordError> {
        if self.version != RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        let id = self
            .id
            .parse::<SandboxId>()
            .map_err(|_| RecordError::Field { field: "id" })?;
        let template = self
            .template
            .parse::<TemplateId>()
            .map_err(|_| RecordError::Field { field: "template" })?;
        let state = SandboxState::from_persisted(&self.state)
            .ok_or(RecordError::Field { field: "state" })?;
        let endpoints = match (self.control_socket, self.envd_socket) {
            (Some(control_socket), Some(envd_socket)) => Some(SandboxEndpoints {
                control_socket,
                envd_socket,
            }),
            _ => None,
        };
        let on_timeout = match (self.auto_pause, self.auto_pause_memory) {
            (false, _) => TimeoutAction::Kill,
            (true, true) => TimeoutAction::Pause(PauseMode::Memory),
            (true, false) => TimeoutAction::Pause(PauseMode::Filesystem),
        };
        let pause_mode = match self.pause_mode.as_deref() {
            None => None,
            Some(name) => Some(PauseMode::from_persisted(name).ok_or(RecordError::Field {
                field: "pause_mode",
            })?),
        };
        let volume_mounts = self
            .volume_mounts
            .into_iter()
            .map(|(name, path)| {
                let name = name.parse().map_err(|_| RecordError::Field {
                    field: "volume_mounts",
                })?;
                Ok(VolumeMount { name, path })
            })
            .collect::<Result<Vec<_>, RecordError>>()?;
        Ok(Sandbox {
            id,
            spec: SandboxSpec {
                template,
                vcpus: self.vcpus,
                memory_mb: self.memory_mb,
                disk_mb: self.disk_mb,
                env: self.env,
                metadata: self.metadata,
                timeout: Duration::from_millis(self.timeout_ms),
                on_timeout,
                auto_resume: self.auto_resume,
                network: NetworkSpec {
                    allow_internet: self.allow_internet,
                    allow_out: self.allow_out,
                    deny_out: self.deny_out,
                },
                volume_mounts,
                public_traffic: self.public_traffic,
                defaults: crate::runtime::ProcessDefaults {
                    user: self.default_user,
                    workdir: self.default_workdir,
                },
                service: self
                    .service_command
                    .map(|command| crate::storage::TemplateStart {
                        command,
                        ready: self.service_ready,
                        user: self.service_user,
                    }),
            },
            state,
            created_at: from_unix_millis(self.created_at_ms),
            end_at: from_unix_millis(self.end_at_ms),
            endpoints,
            pause_mode,
            access_token: self.access_token.map(AccessToken::from_persisted),
            traffic_token: self.traffic_token.map(AccessToken::from_persisted),
        })
    }
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_sandbox ON events (sandbox_id, seq);
CREATE TABLE IF NOT EXISTS dir_snapshots (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_logs (
    template TEXT PRIMARY KEY,
    written_at_ms INTEGER NOT NULL,
    log TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_steps (
    template TEXT PRIMARY KEY,
    used_at_ms INTEGER NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode.
    ///
    /// # Errors
    /// [`StoreError::Open`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        // With WAL, NORMAL survives a crash of the daemon (not of the host) without an fsync
        // per transaction; a host crash kills the sandboxes anyway.
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        connection.execute_batch(SCHEMA).map_err(open_error)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    /// An in-memory database, for tests.
    ///
    /// # Errors
    /// [`StoreError::Open`].
    pub fn in_memory() -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let connection = Connection::open_in_memory().map_err(open_error)?;
        connection.execute_batch(SCHEMA).map_err(open_error)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts or replaces a sandbox's record.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn put(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        upsert(&self.connection(), sandbox)
    }

    /// Inserts or replaces a sandbox's record and appends an event, in one transaction.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn put_with_event(
        &self,
        sandbox: &Sandbox,
        event: &LifecycleEvent,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection
            .transaction()
            .map_err(|source| StoreError::Query {
                op: "begin",
                source,
            })?;
        upsert(&transaction, sandbox)?;
        insert_event(&transaction, event)?;
        transaction.commit().map_err(|source| StoreError::Query {
            op: "commit",
            source,
        })
    }

    /// One sandbox's record.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let json: Option<String> = self
            .connection()
            .query_row(
                "SELECT record FROM sandboxes WHERE id = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                op: "get sandbox",
                source,
            })?;
        json.map(|json| decode(id.as_str(), &json)).transpose()
    }

    /// Every sandbox that still holds or may hold host resources (not stopped or failed).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn active(&self) -> Result<Vec<Sandbox>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT id, record FROM sandboxes WHERE state NOT IN ('stopped', 'failed')
                 ORDER BY created_at_ms",
            )
            .map_err(|source| StoreError::Query {
                op: "list active",
                source,
            })?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|source| StoreError::Query {
                op: "list active",
                source,
            })?;
        let mut sandboxes = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(|source| StoreError::Query {
                op: "list active",
                source,
            })?;
            sandboxes.push(decode(&id, &json)?);
        }
        Ok(sandboxes)
    }

    /// Appends an event.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn record_event(&self, event: &LifecycleEvent) -> Result<(), StoreError> {
        insert_event(&self.connection(), event)
    }

    /// A sandbox's events, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn events(&self, id: &SandboxId) -> Result<Vec<LifecycleEvent>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT at_ms, kind, reason, detail FROM events WHERE sandbox_id = ?1 ORDER BY seq",
            )
            .map_err(|source| StoreError::Query {
                op: "list events",
                source,
            })?;
        let rows = statement
            .query_map([id.as_str()], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(|source| StoreError::Query {
                op: "list events",
                source,
            })?;
        let mut events = Vec::new();
        for row in rows {
            let (at_ms, kind, reason, detail) = row.map_err(|source| StoreError::Query {
                op: "list events",
                source,
            })?;
            let record_error = |field| StoreError::Record {
                id: id.to_string(),
                source: RecordError::Field { field },
            };
            events.push(LifecycleEvent {
                sandbox_id: id.clone(),
                at: from_unix_millis(at_ms),
                kind: EventKind::from_persisted(&kind).ok_or_else(|| record_error("kind"))?,
                reason: Reason::from_persisted(&reason).ok_or_else(|| record_error("reason"))?,
                detail,
            });
        }
        Ok(events)
    }
}

fn upsert(connection: &Connection, sandbox: &Sandbox) -> Result<(), StoreError> {
    let record = SandboxRecord::from_domain(sandbox);
    let json = encode(sandbox.id.as_str(), &record)?;
    connection
        .execute(
            "INSERT INTO sandboxes (id, state, created_at_ms, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, record = excluded.record",
            params![record.id, record.state, record.created_at_ms, json],
        )
        .map_err(|source| StoreError::Query {
            op: "put sandbox",
            source,
        })?;
    Ok(())
}

fn insert_event(connection: &Connection, event: &LifecycleEvent) -> Result<(), StoreError> {
    connection
        .execute(
            "INSERT INTO events (sandbox_id, at_ms, kind, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                event.sandbox_id.as_str(),
                to_unix_millis(event.at),
                event.kind.as_str(),
                event.reason.as_str(),
                event.detail
            ],
        )
        .map_err(|source| StoreError::Query { op: "record event", source })?;
    Ok(())
}

fn decode(id: &str, json: &str) -> Result<Sandbox, StoreError> {
    decode_record(id, json, SandboxRecord::into_domain)
}

/// The JSON of record `record`, whose key is `key`.
fn encode<R: Serialize>(key: &str, record: &R) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|source| StoreError::Record {
        id: key.to_owned(),
        source: source.into(),
    })
}

/// The domain value of the JSON record `json`, whose key is `key`.
fn decode_record<R: serde::de::DeserializeOwned, T>(
    key: &str,
    json: &str,
    into_domain: fn(R) -> Result<T, RecordError>,
) -> Result<T, StoreError> {
    serde_json::from_str::<R>(json)
        .map_err(RecordError::from)
        .and_then(into_domain)
        .map_err(|source| StoreError::Record {
            id: key.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn sandbox(id: &str, state: SandboxState) -> Sandbox {
        let mut spec = SandboxSpec::new("base".parse().unwrap());
        spec.metadata.insert("k".into(), "v".into());
        Sandbox {
            id: id.parse().unwrap(),
            spec,
            state,
            created_at: UNIX_EPOCH + Duration::from_secs(10),
            end_at: UNIX_EPOCH + Duration::from_secs(310),
            endpoints: Some(SandboxEndpoints {
                control_socket: "/run/c.sock".into(),
                envd_socket: "/run/e.sock".into(),
            }),
            pause_mode: None,
            access_token: Some(AccessToken::from_persisted("t0k".into())),
            traffic_token: None,
        }
    }

    #[test]
    fn test_store_round_trips_lifecycle_options_and_pause_mode() {
        let store = Store::in_memory().unwrap();
        let mut paused = sandbox("paused", SandboxState::Paused);
        paused.pause_mode = Some(PauseMode::Filesystem);
        paused.spec.on_timeout = TimeoutAction::Pause(PauseMode::Filesystem);
        paused.spec.auto_resume = true;
        let mut frozen = sandbox("frozen", SandboxState::Paused);
        frozen.pause_mode = Some(PauseMode::Memory);
        frozen.spec.on_timeout = TimeoutAction::Pause(PauseMode::Memory);
        for original in [paused, frozen] {
            store.put(&original).unwrap();
            assert_eq!(store.get(&original.id).unwrap(), Some(original));
        }
    }

    #[test]
    fn test_store_round_trips_private_traffic_and_its_token() {
        let store = Store::in_memory().unwrap();
        let mut private = sandbox("private", SandboxState::Running);
        private.spec.public_traffic = false;
        private.traffic_token = Some(AccessToken::from_persisted("tr4ff1c".into()));
        store.put(&private).unwrap();
        assert_eq!(store.get(&private.id).unwrap(), Some(private));
    }

    #[test]
    fn test_store_round_trips_the_template_defaults_and_service() {
        let store = Store::in_memory().unwrap();
        let mut imported = sandbox("img", SandboxState::Running);
        imported.spec.defaults = crate::runtime::ProcessDefaults {
            user: Some("app".into()),
            workdir: Some("/srv".into()),
        };
        imported.spec.service = Some(crate::storage::TemplateStart {
            command: "serve".into(),
            ready: Some("probe".into()),
            user: Some("app:staff".into()),
        });
        store.put(&imported).unwrap();
        assert_eq!(store.get(&imported.id).unwrap(), Some(imported));
    }

    #[test]
    fn test_store_put_get_round_trips_a_sandbox() {
        let store = Store::in_memory().unwrap();
        let original = sandbox("abc", SandboxState::Running);
        store.put(&original).unwrap();
        assert_eq!(store.get(&original.id).unwrap(), Some(original));
    }

    #[test]
    fn test_store_active_excludes_stopped_and_failed() {
        let store = Store::in_memory().unwrap();
        store.put(&sandbox("a", SandboxState::Running)).unwrap();
        store.put(&sandbox("b", SandboxState::Stopped)).unwrap();
        store.put(&sandbox("c", SandboxState::Failed)).unwrap();
        store.put(&sandbox("d", SandboxState::Creating)).unwrap();
        let ids: Vec<String> = store
            .active()
            .unwrap()
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(ids, ["a", "d"]);
    }

    #[test]
    fn test_store_events_keep_order_and_fields() {
        let store = Store::in_memory().unwrap();
        let id: SandboxId = "abc".parse().unwrap();
        for kind in [EventKind::Created, EventKind::OomKill] {
            store
                .record_event(&LifecycleEvent {
                    sandbox_id: id.clone(),
                    at: UNIX_EPOCH + Duration::from_secs(5),
                    kind,
                    reason: Reason::Oom,
                    detail: "d".into(),
                })
                .unwrap();
        }
        let kinds: Vec<EventKind> = store
            .events(&id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, [EventKind::Created, EventKind::OomKill]);
    }

    #[test]
    fn test_store_survives_reopen_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let original = sandbox("persisted", SandboxState::Running);
        Store::open(&path).unwrap().put(&original).unwrap();
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.get(&original.id).unwrap(), Some(original));
    }

    #[test]
    fn test_store_unknown_version_is_a_record_error() {
        let store = Store::in_memory().unwrap();
        store
            .connection()
            .execute(
                "INSERT INTO sandboxes (id, state, created_at_ms, record) VALUES ('x', 'running', 0, ?1)",
                [r#"{"version": 99}"#],
            )
            .unwrap();
        assert!(matches!(store.active(), Err(StoreError::Record { .. })));
    }
}
