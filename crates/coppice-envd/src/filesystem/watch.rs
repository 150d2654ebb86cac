//! Directory watches (inotify through `notify`): the `WatchDir` stream and the polled
//! watchers behind `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::entry;
use crate::error::EnvdError;
use crate::proto::filesystem::{EventType, FilesystemEvent};
use crate::users::UserDb;

/// Most events a polled watcher keeps between two polls; older ones are dropped.
const POLLED_QUEUE: usize = 10_000;

/// `statfs` magic numbers of network and user-space file systems.
const NETWORK_FS_MAGIC: [i64; 5] = [0x6969, 0xFF53_4D42, 0xFE53_4D42, 0x6573_5546, 0x0102_1997];

/// What a watch is over.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The directory (absolute).
    pub dir: PathBuf,
    /// Whether subdirectories are watched too.
    pub recursive: bool,
    /// Whether events carry the entry's info.
    pub include_entry: bool,
    /// Whether network file systems may be watched.
    pub allow_network_mounts: bool,
}

/// A live watch; dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching; events go to `sink` as they happen.
///
/// # Errors
/// [`EnvdError::NotFound`] for a missing directory, [`EnvdError::InvalidArgument`] for a
/// non-directory or a refused network mount, [`EnvdError::Internal`] when inotify refuses.
pub fn watch(
    spec: &WatchSpec,
    users: UserDb,
    sink: impl Fn(FilesystemEvent) + Send + 'static,
) -> Result<Watch, EnvdError> {
    let metadata = std::fs::metadata(&spec.dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("path '{}' does not exist", spec.dir.display()))
        } else {
            EnvdError::io(&spec.dir.display().to_string(), &e)
        }
    })?;
    if !metadata.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "path '{}' is not a directory",
            spec.dir.display()
        )));
    }
    if !spec.allow_network_mounts && is_network_mount(&spec.dir) {
        return Err(EnvdError::InvalidArgument(format!(
            "path '{}' is on a network mount; set allow_network_mounts to watch it",
            spec.dir.display()
        )));
    }
    let root = spec.dir.clone();
    let include_entry = spec.include_entry;
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        let Some(kind) = event_type(&event.kind) else {
            return;
        };
        for path in &event.paths {
            sink(to_wire(&root, path, kind, include_entry, &users));
        }
    })
    .map_err(|e| EnvdError::Internal(format!("start watching: {e}")))?;
    let mode = if spec.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(&spec.dir, mode)
        .map_err(|e| EnvdError::Internal(format!("watch {}: {e}", spec.dir.display())))?;
    Ok(Watch { _watcher: watcher })
}

fn is_network_mount(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|stats| {
        #[allow(clippy::useless_conversion)]
        let magic = i64::from(stats.f_type);
        NETWORK_FS_MAGIC.contains(&magic)
    })
}

fn event_type(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::EVENT_TYPE_CREATE),
        EventKind::Modify(ModifyKind::Name(_)) => Some(EventType::EVENT_TYPE_RENAME),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::EVENT_TYPE_CHMOD),
        EventKind::Modify(_) => Some(EventType::EVENT_TYPE_WRITE),
        EventKind::Remove(_) => Some(EventType::EVENT_TYPE_REMOVE),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

fn to_wire(
    root: &Path,
    path: &Path,
    kind: EventType,
    include_entry: bool,
    users: &UserDb,
) -> FilesystemEvent {
    let name = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let entry = if include_entry {
        entry::entry_info(path, &users.names()).ok()
    } else {
        None
    };
    FilesystemEvent {
        name,
        r#type: kind.into(),
        entry: entry.map_or_else(buffa::MessageField::none, buffa::MessageField::some),
        ..Default::default()
    }
}

/// A watch whose events wait for the client to poll them.
#[derive(Debug)]
struct Polled {
    _watch: Watch,
    events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
}

/// The polled watchers, by id.
#[derive(Debug, Default)]
pub struct WatcherTable {
    watchers: Mutex<HashMap<String, Polled>>,
}

impl WatcherTable {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Polled>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a polled watcher and returns its id.
    ///
    /// # Errors
    /// As [`watch`].
    pub fn create(&self, spec: &WatchSpec, users: UserDb) -> Result<String, EnvdError> {
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let queue = Arc::clone(&events);
        let watch = watch(spec, users, move |event| {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() == POLLED_QUEUE {
                queue.pop_front();
            }
            queue.push_back(event);
        })?;
        let id = new_id()?;
        self.map().insert(
            id.clone(),
            Polled {
                _watch: watch,
                events,
            },
        );
        Ok(id)
    }

    /// Takes the events gathered since the last poll.
    ///
    /// # Errors
    /// [`EnvdError::NotFound`] for an unknown id.
    pub fn take_events(&self, id: &str) -> Result<Vec<FilesystemEvent>, EnvdError> {
        let map = self.map();
        let polled = map
            .get(id)
            .ok_or_else(|| EnvdError::NotFound(format!("watcher with id {id} not found")))?;
        let mut queue = polled.events.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(queue.drain(..).collect())
    }

    /// Stops a watcher.
    ///
    /// # Errors
    /// [`EnvdError::NotFound`] for an unknown id.
    pub fn remove(&self, id: &str) -> Result<(), EnvdError> {
        self.map()
            .remove(id)
            .map(drop)
            .ok_or_else(|| EnvdError::NotFound(format!("watcher with id {id} not found")))
    }
}

fn new_id() -> Result<String, EnvdError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| EnvdError::Internal(format!("random id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A channel-backed sink for a streamed watch.
pub fn channel() -> (
    impl Fn(FilesystemEvent) + Send + 'static,
    mpsc::UnboundedReceiver<FilesystemEvent>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        move |event| {
            let _ = sender.send(event);
        },
        receiver,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(dir: &Path) -> WatchSpec {
        WatchSpec {
            dir: dir.to_path_buf(),
            recursive: true,
            include_entry: true,
            allow_network_mounts: false,
        }
    }

    #[test]
    fn test_polled_watcher_reports_relative_names_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let table = WatcherTable::default();
        let id = table
            .create(&spec(dir.path()), UserDb::new(Path::new("/etc")))
            .unwrap();
        std::fs::write(dir.path().join("sub/f.txt"), b"x").unwrap();
        let mut names = Vec::new();
        for _ in 0..100 {
            names.extend(table.take_events(&id).unwrap().into_iter().map(|e| e.name));
            if names.iter().any(|n| n == "sub/f.txt") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(names.iter().any(|n| n == "sub/f.txt"), "{names:?}");
        table.remove(&id).unwrap();
        assert!(matches!(
            table.take_events(&id),
            Err(EnvdError::NotFound(_))
        ));
    }

    #[test]
    fn test_watch_refuses_missing_dirs_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let users = UserDb::new(Path::new("/etc"));
        let missing = watch(&spec(&dir.path().join("nope")), users.clone(), |_| {});
        assert!(matches!(missing, Err(EnvdError::NotFound(_))));
        let file = watch(&spec(&dir.path().join("f")), users, |_| {});
        assert!(matches!(file, Err(EnvdError::InvalidArgument(_))));
    }
}
