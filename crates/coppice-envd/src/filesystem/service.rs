//! `filesystem.Filesystem`: the Connect handlers over the sandbox's files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};

use super::watch::{self, WatchSpec};
use super::{ensure_dirs, entry};
use crate::error::EnvdError;
use crate::proto::filesystem::__buffa::oneof::watch_dir_response::Event as WatchEvent;
use crate::proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, Filesystem, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest, WatchDirResponse,
};
use crate::state::Envd;
use crate::users::User;
use crate::{auth, rpc};

/// The `filesystem.Filesystem` service.
#[derive(Debug, Clone)]
pub struct FilesystemService {
    envd: Arc<Envd>,
}

impl FilesystemService {
    /// The service over shared state.
    #[must_use]
    pub fn new(envd: Arc<Envd>) -> Self {
        Self { envd }
    }

    fn user(&self, ctx: &RequestContext) -> Result<User, EnvdError> {
        self.envd.user(auth::basic_user(ctx).as_deref())
    }

    fn resolve(&self, user: &User, raw: &str) -> Result<PathBuf, EnvdError> {
        crate::paths::resolve(raw, &user.home, &self.envd.default_dir(user))
    }

    /// The request's user and `raw` resolved for them.
    fn user_and_path(&self, ctx: &RequestContext, raw: &str) -> Result<(User, PathBuf), EnvdError> {
        let user = self.user(ctx)?;
        let path = self.resolve(&user, raw)?;
        Ok((user, path))
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EnvdError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EnvdError::Internal(format!("file task failed: {e}")))?
        .map_err(ConnectError::from)
}

fn list(dir: &Path, depth: u32, names: &crate::users::Names) -> Result<Vec<EntryInfo>, EnvdError> {
    let metadata = std::fs::metadata(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("directory '{}' does not exist", dir.display()))
        } else {
            EnvdError::io(&dir.display().to_string(), &e)
        }
    })?;
    if !metadata.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "path '{}' is not a directory",
            dir.display()
        )));
    }
    let mut entries = Vec::new();
    walk(dir, depth.max(1), names, &mut entries)?;
    Ok(entries)
}

fn walk(
    dir: &Path,
    depth: u32,
    names: &crate::users::Names,
    out: &mut Vec<EntryInfo>,
) -> Result<(), EnvdError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EnvdError::io(&format!("read directory '{}'", dir.display()), &e))?
        .filter_map(Result::ok)
        .collect();
    children.sort_by_key(std::fs::DirEntry::file_name);
    for child in children {
        let path = child.path();
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        out.push(entry::from_metadata(&path, &metadata, names));
        // Links are listed, never followed.
        if depth > 1 && metadata.is_dir() {
            walk(&path, depth - 1, names, out)?;
        }
    }
    Ok(())
}

fn watch_spec(
    dir: PathBuf,
    recursive: bool,
    include_entry: bool,
    allow_network_mounts: bool,
) -> WatchSpec {
    WatchSpec {
        dir,
        recursive,
        include_entry,
        allow_network_mounts,
    }
}

impl Filesystem for FilesystemService {
    #[allow(refining_impl_trait)]
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let (_, path) = self.user_and_path(&ctx, request.path)?;
        let users = self.envd.users.clone();
        let entry = blocking(move || entry::entry_info(&path, &users.names())).await?;
        Response::ok(StatResponse {
            entry: buffa::MessageField::some(entry),
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let (user, path) = self.user_and_path(&ctx, request.path)?;
        let users = self.envd.users.clone();
        let entry = blocking(move || {
            match std::fs::metadata(&path) {
                Ok(metadata) if metadata.is_dir() => {
                    return Err(EnvdError::AlreadyExists(format!(
                        "directory '{}' already exists",
                        path.display()
                    )));
                }
                Ok(_) => {
                    return Err(EnvdError::InvalidArgument(format!(
                        "path '{}' already exists and is not a directory",
                        path.display()
                    )));
                }
                Err(_) => {}
            }
            ensure_dirs(&path, &user)?;
            entry::entry_info(&path, &users.names())
        })
        .await?;
        Response::ok(MakeDirResponse {
            entry: buffa::MessageField::some(entry),
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let user = self.user(&ctx)?;
        let source = self.resolve(&user, request.source)?;
        let destination = self.resolve(&user, request.destination)?;
        let users = self.envd.users.clone();
        let entry = blocking(move || {
            if std::fs::symlink_metadata(&source).is_err() {
                return Err(EnvdError::NotFound(format!(
                    "source '{}' does not exist",
                    source.display()
                )));
            }
            if let Some(parent) = destination.parent() {
                ensure_dirs(parent, &user)?;
            }
            std::fs::rename(&source, &destination).map_err(|e| {
                EnvdError::io(
                    &format!("move '{}' to '{}'", source.display(), destination.display()),
                    &e,
                )
            })?;
            entry::entry_info(&destination, &users.names())
        })
        .await?;
        Response::ok(MoveResponse {
            entry: buffa::MessageField::some(entry),
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let (_, path) = self.user_and_path(&ctx, request.path)?;
        let depth = request.depth;
        let users = self.envd.users.clone();
        let entries = blocking(move || list(&path, depth, &users.names())).await?;
        Response::ok(ListDirResponse {
            entries,
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let (_, path) = self.user_and_path(&ctx, request.path)?;
        blocking(move || {
            let result = match std::fs::symlink_metadata(&path) {
                Err(_) => return Ok(()),
                Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
            };
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(EnvdError::io(&format!("remove '{}'", path.display()), &e))
                }
                _ => Ok(()),
            }
        })
        .await?;
        Response::ok(RemoveResponse::default())
    }

    #[allow(refining_impl_trait)]
    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let (_, dir) = self.user_and_path(&ctx, request.path)?;
        let spec = watch_spec(
            dir,
            request.recursive,
            request.include_entry,
            request.allow_network_mounts,
        );
        let (sink, receiver) = watch::channel();
        let watch = watch::watch(&spec, self.envd.users.clone(), sink)?;
        let keepalive = rpc::keepalive(&ctx, self.envd.config.default_keepalive);
        let deadline = rpc::deadline(&ctx);
        let start = WatchDirResponse {
            event: Some(WatchEvent::Start(Box::default())),
            ..Default::default()
        };
        let state = (Some(start), receiver, watch, false);
        let stream = futures_util::stream::unfold(
            state,
            move |(start, mut receiver, watch, done)| async move {
                if done {
                    return None;
                }
                if let Some(start) = start {
                    return Some((Ok(start), (None, receiver, watch, false)));
                }
                let wait = match deadline {
                    Some(deadline) => {
                        let now = tokio::time::Instant::now();
                        if now >= deadline {
                            // The watch's lifetime is the RPC's; it ends quietly.
                            return None;
                        }
                        keepalive.min(deadline - now)
                    }
                    None => keepalive,
                };
                let event = match tokio::time::timeout(wait, receiver.recv()).await {
                    Ok(Some(event)) => WatchEvent::Filesystem(Box::new(event)),
                    Ok(None) => return None,
                    Err(_) => {
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            return None;
                        }
                        WatchEvent::Keepalive(Box::default())
                    }
                };
                let response = WatchDirResponse {
                    event: Some(event),
                    ..Default::default()
                };
                Some((Ok(response), (None, receiver, watch, false)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    #[allow(refining_impl_trait)]
    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let (_, dir) = self.user_and_path(&ctx, request.path)?;
        let spec = watch_spec(
            dir,
            request.recursive,
            request.include_entry,
            request.allow_network_mounts,
        );
        let watcher_id = self.envd.watchers.create(&spec, self.envd.users.clone())?;
        Response::ok(CreateWatcherResponse {
            watcher_id,
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let events = self.envd.watchers.take_events(request.watcher_id)?;
        Response::ok(GetWatcherEventsResponse {
            events,
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        self.envd.watchers.remove(request.watcher_id)?;
        Response::ok(RemoveWatcherResponse::default())
    }
}
