//! `ZfsStorage`: coppice's `Storage` over ZFS datasets, clones and snapshots.
//!
//! A sandbox's root is a clone of its template's `@template` snapshot, with the sandbox's
//! disk size as its quota. A snapshot of a sandbox becomes a template by cloning
//! `<sandbox>@<name>`, snapshotting the clone `@template` and promoting it, so the sandbox
//! can be destroyed while the template lives on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coppice_core::storage::{RootFs, Storage, StorageError, TemplateInfo};
use coppice_core::{SandboxId, TemplateId, VolumeId};

use crate::command::ZfsOp;
use crate::layout::{DatasetName, InvalidDatasetName, TEMPLATE_SNAPSHOT, ZfsLayout};
use crate::list::{DatasetKind, DatasetRow, parse_list};
use crate::sys::{ZfsError, ZfsSys};

/// Default user and working directory of a template that does not name its own.
const DEFAULT_USER: &str = "user";
const DEFAULT_WORKDIR: &str = "/home/user";

/// `Storage` over the datasets of a [`ZfsLayout`].
pub struct ZfsStorage {
    layout: ZfsLayout,
    sys: Arc<dyn ZfsSys>,
}

impl std::fmt::Debug for ZfsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZfsStorage")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn backend(op: &'static str, error: ZfsError) -> StorageError {
    if error.is_out_of_space() {
        StorageError::Exhausted {
            op,
            source: Box::new(error),
        }
    } else {
        StorageError::Backend {
            op,
            source: Box::new(error),
        }
    }
}

impl From<InvalidDatasetName> for StorageError {
    fn from(error: InvalidDatasetName) -> Self {
        Self::Invalid {
            reason: error.to_string(),
        }
    }
}

/// The last component of `name` when `name` is a direct child of `parent`.
fn child_of<'a>(name: &'a str, parent: &DatasetName) -> Option<&'a str> {
    name.strip_prefix(parent.as_str())?
        .strip_prefix('/')
        .filter(|rest| !rest.contains('/'))
}

/// Set on every volume coppice clones: the host never looks inside a disk whose contents a
/// guest controls (no GEOM tasting of its partitions or labels).
pub const VOLUME_PROPS: [(&str, &str); 1] = [("volmode", "dev")];

impl ZfsStorage {
    /// Storage over `layout`, reaching ZFS through `sys`; see [`ZfsStorage::open`] for a
    /// daemon's start.
    pub fn new(layout: ZfsLayout, sys: Arc<dyn ZfsSys>) -> Self {
        Self { layout, sys }
    }

    /// Storage over `layout` once its pool is known to exist, with the parents of template,
    /// sandbox and volume datasets made where missing (clones need their parent).
    ///
    /// # Errors
    /// `Invalid` naming the pool when it does not exist; a backend failure otherwise.
    pub fn open(layout: ZfsLayout, sys: Arc<dyn ZfsSys>) -> Result<Self, StorageError> {
        let storage = Self::new(layout, sys);
        let pool = DatasetName::parse(storage.layout.root().pool())?;
        match storage.sys.zfs(&ZfsOp::Exists { dataset: &pool }) {
            Ok(_) => {}
            Err(error) if error.is_missing() => {
                return Err(StorageError::Invalid {
                    reason: format!(
                        "ZFS pool {pool} does not exist (`zpool list` shows the pools); coppice \
                         keeps its datasets under {}",
                        storage.layout.root()
                    ),
                });
            }
            Err(error) => return Err(backend("look up the pool", error)),
        }
        let rows = storage.rows()?;
        for parent in [
            storage.layout.templates()?,
            storage.layout.sandboxes()?,
            storage.layout.volumes()?,
        ] {
            if rows.iter().any(|row| row.name == parent.as_str()) {
                continue;
            }
            storage.run(
                "create parent dataset",
                &ZfsOp::Create {
                    dataset: &parent,
                    mountpoint: &storage.layout.mountpoint(&parent),
                    props: &[],
                },
            )?;
        }
        Ok(storage)
    }

    fn run(&self, what: &'static str, op: &ZfsOp<'_>) -> Result<String, StorageError> {
        self.sys.zfs(op).map_err(|error| backend(what, error))
    }

    /// Every filesystem under the root; none when the root does not exist yet.
    fn rows(&self) -> Result<Vec<DatasetRow>, StorageError> {
        match self.sys.zfs(&ZfsOp::List {
            root: self.layout.root(),
        }) {
            Ok(output) => parse_list(&output).map_err(|error| StorageError::Backend {
                op: "list datasets",
                source: Box::new(error),
            }),
            Err(error) if error.is_missing() => Ok(Vec::new()),
            Err(error) => Err(backend("list datasets", error)),
        }
    }

    fn row(&self, dataset: &DatasetName) -> Result<Option<DatasetRow>, StorageError> {
        Ok(self
            .rows()?
            .into_iter()
            .find(|row| row.name == dataset.as_str()))
    }

    fn template_info(&self, row: &DatasetRow) -> Option<TemplateInfo> {
        let templates = self.layout.templates().ok()?;
        let id: TemplateId = child_of(&row.name, &templates)?.parse().ok()?;
        Some(TemplateInfo {
            id,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(row.creation),
            size_bytes: row.used,
            default_user: row.user.clone().unwrap_or_else(|| DEFAULT_USER.into()),
            default_workdir: row
                .workdir
                .clone()
                .unwrap_or_else(|| DEFAULT_WORKDIR.into()),
            snapshot_of: row.snapshot_of.as_deref().and_then(|s| s.parse().ok()),
            // Templates with a service or an environment are built by the overlay storage
            // only, so far.
            start: None,
            env: Vec::new(),
            built_from: None,
        })
    }

    /// The dataset holding sandbox `id`'s root among `rows`: `sandboxes/<id>`, or one a
    /// runtime handed over to it (`coppice:sandbox=<id>`: a pooled VM's disk, never renamed,
    /// because renaming a zvol revokes the device its VM has open).
    fn sandbox_row<'r>(
        &self,
        id: &SandboxId,
        rows: &'r [DatasetRow],
    ) -> Result<Option<&'r DatasetRow>, StorageError> {
        let dataset = self.layout.sandbox(id)?;
        Ok(rows
            .iter()
            .find(|row| row.name == dataset.as_str())
            .or_else(|| {
                rows.iter()
                    .find(|row| row.sandbox.as_deref() == Some(id.as_str()))
            }))
    }

    /// The root a sandbox's dataset gives: a directory, or a volume's disk.
    fn root_of(&self, dataset: &DatasetName, row: &DatasetRow) -> RootFs {
        match row.kind {
            DatasetKind::Volume => RootFs::Disk {
                device: ZfsLayout::device(dataset),
            },
            DatasetKind::Filesystem => RootFs::Directory {
                path: row
                    .mountpoint
                    .clone()
                    .unwrap_or_else(|| self.layout.mountpoint(dataset)),
                binds: Vec::new(),
            },
        }
    }

    /// Destroys `dataset` if it is a clone of `origin`: what a failed clone may have left,
    /// and never a dataset someone else made under that name meanwhile.
    fn destroy_if_clone_of(&self, dataset: &DatasetName, origin: &str) {
        let ours = self
            .row(dataset)
            .ok()
            .flatten()
            .is_some_and(|row| row.origin.as_deref() == Some(origin));
        if ours {
            let _ = self.sys.zfs(&ZfsOp::Destroy {
                name: dataset.as_str(),
            });
        }
    }

    /// Removes what a failed snapshot made; failures here leave names a retry reports.
    fn undo_snapshot(&self, template: &DatasetName, sandbox_snapshot: &str) {
        self.destroy_if_clone_of(template, sandbox_snapshot);
        let _ = self.sys.zfs(&ZfsOp::Destroy {
            name: sandbox_snapshot,
        });
    }
}

impl Storage for ZfsStorage {
    fn templates(&self) -> Result<Vec<TemplateInfo>, StorageError> {
        Ok(self
            .rows()?
            .iter()
            .filter_map(|row| self.template_info(row))
            .collect())
    }

    fn template(&self, id: &TemplateId) -> Result<TemplateInfo, StorageError> {
        let dataset = self.layout.template(id)?;
        self.row(&dataset)?
            .and_then(|row| self.template_info(&row))
            .ok_or_else(|| StorageError::TemplateNotFound { id: id.clone() })
    }

    fn create_rootfs(
        &self,
        id: &SandboxId,
        template: &TemplateId,
        disk_mb: u32,
    ) -> Result<RootFs, StorageError> {
        let dataset = self.layout.sandbox(id)?;
        let rows = self.rows()?;
        let template_dataset = self.layout.template(template)?;
        let Some(template_row) = rows
            .iter()
            .find(|row| row.name == template_dataset.as_str())
        else {
            return Err(StorageError::TemplateNotFound {
                id: template.clone(),
            });
        };
        // A volume's clone is a disk of the template's size: no mountpoint, no quota.
        let volume = template_row.kind == DatasetKind::Volume;
        if rows.iter().any(|row| row.name == dataset.as_str()) {
            return Err(StorageError::AlreadyExists { id: id.clone() });
        }
        let mountpoint = self.layout.mountpoint(&dataset);
        let origin = self.layout.template_snapshot(template)?;
        match self.sys.zfs(&ZfsOp::Clone {
            origin: &origin,
            dataset: &dataset,
            mountpoint: (!volume).then_some(mountpoint.as_path()),
            quota_mb: (!volume).then_some(disk_mb),
            props: if volume { &VOLUME_PROPS } else { &[] },
        }) {
            Ok(_) if volume => Ok(RootFs::Disk {
                device: ZfsLayout::device(&dataset),
            }),
            Ok(_) => Ok(RootFs::Directory {
                path: mountpoint,
                binds: Vec::new(),
            }),
            Err(error) if error.is_existing() => {
                Err(StorageError::AlreadyExists { id: id.clone() })
            }
            Err(error) => {
                // `zfs clone` can make the clone and then fail to mount it.
                self.destroy_if_clone_of(&dataset, &origin);
                Err(backend("clone template", error))
            }
        }
    }

    fn rootfs(&self, id: &SandboxId) -> Result<RootFs, StorageError> {
        let rows = self.rows()?;
        let row = self
            .sandbox_row(id, &rows)?
            .ok_or_else(|| StorageError::NotFound { id: id.clone() })?;
        Ok(self.root_of(&DatasetName::parse(&row.name)?, row))
    }

    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError> {
        let dataset = self.layout.sandbox(id)?;
        let adopted: Vec<String> = self
            .rows()?
            .into_iter()
            .filter(|row| row.sandbox.as_deref() == Some(id.as_str()))
            .map(|row| row.name)
            .collect();
        for name in std::iter::once(dataset.as_str()).chain(adopted.iter().map(String::as_str)) {
            match self.sys.zfs(&ZfsOp::Destroy { name }) {
                Err(error) if !error.is_missing() => {
                    return Err(backend("destroy sandbox dataset", error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError> {
        let sandboxes = self.layout.sandboxes()?;
        let mut ids: Vec<SandboxId> = self
            .rows()?
            .iter()
            .filter_map(|row| {
                row.sandbox
                    .as_deref()
                    .or_else(|| child_of(&row.name, &sandboxes))?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn snapshot_rootfs(
        &self,
        id: &SandboxId,
        snapshot: &TemplateId,
    ) -> Result<TemplateInfo, StorageError> {
        if snapshot.as_str() == TEMPLATE_SNAPSHOT {
            // `<sandbox>@template` would collide with the new template's own `@template`.
            return Err(StorageError::Invalid {
                reason: format!("{TEMPLATE_SNAPSHOT:?} is reserved and cannot name a snapshot"),
            });
        }
        let template = self.layout.template(snapshot)?;
        let rows = self.rows()?;
        let Some(sandbox_row) = self.sandbox_row(id, &rows)? else {
            return Err(StorageError::NotFound { id: id.clone() });
        };
        let sandbox = DatasetName::parse(&sandbox_row.name)?;
        if rows.iter().any(|row| row.name == template.as_str()) {
            return Err(StorageError::TemplateExists {
                id: snapshot.clone(),
            });
        }
        // The new template keeps the user and working directory of the sandbox's template.
        let parent = sandbox_row
            .origin
            .as_deref()
            .and_then(|origin| origin.split('@').next())
            .and_then(|name| rows.iter().find(|row| row.name == name));
        let user = parent
            .and_then(|row| row.user.clone())
            .unwrap_or_else(|| DEFAULT_USER.into());
        let workdir = parent
            .and_then(|row| row.workdir.clone())
            .unwrap_or_else(|| DEFAULT_WORKDIR.into());

        let sandbox_snapshot = format!("{sandbox}@{snapshot}");
        self.run(
            "snapshot sandbox",
            &ZfsOp::Snapshot {
                name: &sandbox_snapshot,
            },
        )?;
        let mut props = vec![
            ("coppice:user", user.as_str()),
            ("coppice:workdir", workdir.as_str()),
            ("coppice:snapshot_of", id.as_str()),
        ];
        if sandbox_row.kind == DatasetKind::Volume {
            props.extend(VOLUME_PROPS);
        }
        let made = self
            .run(
                "clone snapshot into a template",
                &ZfsOp::Clone {
                    origin: &sandbox_snapshot,
                    dataset: &template,
                    mountpoint: (sandbox_row.kind == DatasetKind::Filesystem)
                        .then_some(self.layout.mountpoint(&template).as_path()),
                    quota_mb: None,
                    props: &props,
                },
            )
            .and_then(|_| {
                self.run(
                    "snapshot the new template",
                    &ZfsOp::Snapshot {
                        name: &format!("{template}@{TEMPLATE_SNAPSHOT}"),
                    },
                )
            })
            .and_then(|_| {
                self.run(
                    "promote the new template",
                    &ZfsOp::Promote { dataset: &template },
                )
            });
        if let Err(error) = made {
            self.undo_snapshot(&template, &sandbox_snapshot);
            return Err(error);
        }
        self.template(snapshot)
    }

    fn create_volume(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let dataset = self.layout.volume(id)?;
        let mountpoint = self.layout.mountpoint(&dataset);
        match self.sys.zfs(&ZfsOp::Create {
            dataset: &dataset,
            mountpoint: &mountpoint,
            props: &[],
        }) {
            Ok(_) => Ok(mountpoint),
            Err(error) if error.is_existing() => Err(StorageError::VolumeExists { id: id.clone() }),
            Err(error) => Err(backend("create volume dataset", error)),
        }
    }

    fn volume_path(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let dataset = self.layout.volume(id)?;
        self.row(&dataset)?
            .map(|row| {
                row.mountpoint
                    .unwrap_or_else(|| self.layout.mountpoint(&dataset))
            })
            .ok_or_else(|| StorageError::VolumeNotFound { id: id.clone() })
    }

    fn delete_volume(&self, id: &VolumeId) -> Result<(), StorageError> {
        let dataset = self.layout.volume(id)?;
        match self.sys.zfs(&ZfsOp::Destroy {
            name: dataset.as_str(),
        }) {
            Ok(_) => Ok(()),
            Err(error) if error.is_missing() => {
                Err(StorageError::VolumeNotFound { id: id.clone() })
            }
            Err(error) => Err(backend("destroy volume dataset", error)),
        }
    }
}

#[cfg(test)]
mod tests;
