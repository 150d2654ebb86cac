//! The builds and uploads of E2B's template-build API, in memory: a build is opened by
//! `POST /v3/templates`, started once, and polled for its log until it ends; a `COPY` step's
//! files wait here, sent once under their upload token, until unused for a while. A restart
//! of the daemon forgets both (the SDKs then see 404, or upload again).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use coppice_core::TemplateId;

/// Builds remembered; past this, the oldest not running is forgotten as a new one opens.
const MAX_KEPT_BUILDS: usize = 256;
/// Most bytes of uploads kept at once (each one is at most a run step's input).
pub(crate) const MAX_UPLOADED_BYTES: usize = 512 << 20;
/// Uploads whose bodies are read at once; more wait their turn.
const MAX_UPLOADS_RECEIVED_AT_ONCE: usize = 4;
/// How long an upload is kept after it was last asked for, sent or used.
const UPLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuildState {
    /// Opened, its steps not sent yet.
    Waiting,
    /// Running.
    Building,
    /// Its template is made.
    Ready,
    /// It failed.
    Error,
}

impl BuildState {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }
}

/// A line of a build's log.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) at: SystemTime,
    pub(crate) error: bool,
    pub(crate) message: String,
}

/// Why a build failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// The E2B step (`"base"`, or its number) that failed, when one did.
    pub(crate) step: Option<String>,
}

/// One build.
#[derive(Debug, Clone)]
pub(crate) struct Build {
    /// When it was opened, in the order of openings.
    opened: u64,
    pub(crate) template: TemplateId,
    /// Tags its template gets once built.
    pub(crate) tags: Vec<String>,
    pub(crate) state: BuildState,
    pub(crate) log: Vec<LogLine>,
    pub(crate) failure: Option<Failure>,
}

#[derive(Debug)]
struct Upload {
    template: TemplateId,
    hash: String,
    token: String,
    files: Option<Bytes>,
    /// When it was asked for, uploaded or used last: unused ones expire.
    touched: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    builds: HashMap<String, Build>,
    uploads: Vec<Upload>,
    openings: u64,
}

/// Every build and upload.
#[derive(Debug)]
pub(crate) struct Jobs {
    inner: Mutex<Inner>,
    /// Bodies being read at once: each may hold up to a run step's input in memory.
    pub(crate) receiving: tokio::sync::Semaphore,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            receiving: tokio::sync::Semaphore::new(MAX_UPLOADS_RECEIVED_AT_ONCE),
        }
    }
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left plain data behind, still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens build `build_id` of `template`.
    pub(crate) fn open(&self, build_id: &str, template: TemplateId, tags: Vec<String>) {
        let mut inner = self.lock();
        while inner.builds.len() >= MAX_KEPT_BUILDS {
            let oldest = inner
                .builds
                .iter()
                .filter(|(_, build)| build.state != BuildState::Building)
                .min_by_key(|(_, build)| build.opened)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => inner.builds.remove(&id),
                None => break,
            };
        }
        inner.openings += 1;
        let opened = inner.openings;
        inner.builds.insert(
            build_id.to_owned(),
            Build {
                opened,
                template,
                tags,
                state: BuildState::Waiting,
                log: Vec::new(),
                failure: None,
            },
        );
    }

    /// Build `build_id` of `template`, if it is one.
    pub(crate) fn build(&self, template: &TemplateId, build_id: &str) -> Option<Build> {
        self.lock()
            .builds
            .get(build_id)
            .filter(|build| build.template == *template)
            .cloned()
    }

    /// Moves a waiting build to building; false if it is not waiting (started already).
    pub(crate) fn start(&self, template: &TemplateId, build_id: &str) -> bool {
        let mut inner = self.lock();
        match inner.builds.get_mut(build_id) {
            Some(build) if build.template == *template && build.state == BuildState::Waiting => {
                build.state = BuildState::Building;
                true
            }
            _ => false,
        }
    }

    /// Adds a line to build `build_id`'s log.
    pub(crate) fn log(&self, build_id: &str, error: bool, message: String) {
        if let Some(build) = self.lock().builds.get_mut(build_id) {
            build.log.push(LogLine {
                at: SystemTime::now(),
                error,
                message,
            });
        }
    }

    /// Ends build `build_id`: ready, or failed with `failure`.
    pub(crate) fn finish(&self, build_id: &str, failure: Option<Failure>) {
        if let Some(build) = self.lock().builds.get_mut(build_id) {
            build.state = if failure.is_some() {
                BuildState::Error
            } else {
                BuildState::Ready
            };
            build.failure = failure;
        }
    }

    /// Whether `template`'s files with `hash` are here; if not, the token to upload them with
    /// (`token`, unless one was handed out already).
    pub(crate) fn upload_slot(
        &self,
        template: &TemplateId,
        hash: &str,
        token: String,
    ) -> Result<(), String> {
        let mut inner = self.lock();
        inner.expire_uploads();
        if let Some(upload) = inner
            .uploads
            .iter_mut()
            .find(|u| u.template == *template && u.hash == hash)
        {
            upload.touched = Instant::now();
            return match upload.files {
                Some(_) => Ok(()),
                None => Err(upload.token.clone()),
            };
        }
        inner.uploads.push(Upload {
            template: template.clone(),
            hash: hash.to_owned(),
            token: token.clone(),
            files: None,
            touched: Instant::now(),
        });
        Err(token)
    }

    /// Whether an upload under `token` is awaited (checked before its body is read).
    ///
    /// # Errors
    /// `NotFound` for an unknown or expired token; `Done` when its files came already.
    pub(crate) fn awaits(&self, token: &str) -> Result<(), UploadError> {
        let mut inner = self.lock();
        inner.expire_uploads();
        match inner.uploads.iter().find(|u| u.token == token) {
            None => Err(UploadError::NotFound),
            Some(upload) if upload.files.is_some() => Err(UploadError::Done),
            Some(_) => Ok(()),
        }
    }

    /// Keeps the files uploaded under `token`.
    ///
    /// # Errors
    /// As [`Self::awaits`]; `TooMany` when the uploads kept would pass their bound.
    pub(crate) fn put(&self, token: &str, files: Bytes) -> Result<(), UploadError> {
        let mut inner = self.lock();
        let kept: usize = inner
            .uploads
            .iter()
            .filter_map(|u| u.files.as_ref().map(Bytes::len))
            .sum();
        let upload = inner
            .uploads
            .iter_mut()
            .find(|u| u.token == token)
            .ok_or(UploadError::NotFound)?;
        if upload.files.is_some() {
            return Err(UploadError::Done);
        }
        if kept.saturating_add(files.len()) > MAX_UPLOADED_BYTES {
            return Err(UploadError::TooMany);
        }
        upload.files = Some(files);
        upload.touched = Instant::now();
        Ok(())
    }

    /// The files of `template` with `hash`, if uploaded.
    pub(crate) fn files(&self, template: &TemplateId, hash: &str) -> Option<Bytes> {
        let mut inner = self.lock();
        let upload = inner
            .uploads
            .iter_mut()
            .find(|u| u.template == *template && u.hash == hash)?;
        upload.touched = Instant::now();
        upload.files.clone()
    }
}

impl Inner {
    /// Forgets uploads nobody asked for, sent or used for [`UPLOAD_TTL`]: a client that went
    /// away must not hold memory, and the SDKs upload again when asked.
    fn expire_uploads(&mut self) {
        self.uploads.retain(|u| u.touched.elapsed() < UPLOAD_TTL);
    }
}

/// Why an upload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadError {
    /// No upload waits under that token.
    NotFound,
    /// The uploads kept would pass [`MAX_UPLOADED_BYTES`].
    TooMany,
    /// Its files came already.
    Done,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(name: &str) -> TemplateId {
        name.parse().unwrap()
    }

    #[test]
    fn test_the_oldest_builds_not_running_are_forgotten_first() {
        let jobs = Jobs::default();
        jobs.open("running", id("a"), Vec::new());
        assert!(jobs.start(&id("a"), "running"));
        for n in 0..MAX_KEPT_BUILDS + 5 {
            jobs.open(&format!("b{n}"), id("b"), Vec::new());
        }
        assert!(
            jobs.build(&id("a"), "running").is_some(),
            "a running build stays"
        );
        assert!(jobs.build(&id("b"), "b0").is_none());
        assert!(
            jobs.build(&id("b"), &format!("b{}", MAX_KEPT_BUILDS + 4))
                .is_some()
        );
        assert_eq!(jobs.lock().builds.len(), MAX_KEPT_BUILDS);
    }

    #[test]
    fn test_uploads_wait_under_one_token_within_their_bound() {
        let jobs = Jobs::default();
        let token = jobs.upload_slot(&id("a"), "h", "t1".into()).unwrap_err();
        assert_eq!(token, "t1");
        // Asked again before the upload: the same token.
        assert_eq!(
            jobs.upload_slot(&id("a"), "h", "t2".into()),
            Err("t1".into())
        );
        assert_eq!(jobs.awaits("nope"), Err(UploadError::NotFound));
        assert_eq!(jobs.awaits("t1"), Ok(()));
        assert_eq!(
            jobs.put("nope", Bytes::from_static(&[1])),
            Err(UploadError::NotFound)
        );
        jobs.put("t1", Bytes::from_static(&[1, 2])).unwrap();
        assert_eq!(jobs.awaits("t1"), Err(UploadError::Done), "sent once");
        assert_eq!(
            jobs.put("t1", Bytes::from_static(&[3])),
            Err(UploadError::Done)
        );
        assert_eq!(jobs.upload_slot(&id("a"), "h", "t3".into()), Ok(()));
        assert_eq!(jobs.files(&id("a"), "h").unwrap().as_ref(), [1, 2]);
        assert!(
            jobs.files(&id("b"), "h").is_none(),
            "uploads are per template"
        );
        let big = jobs.upload_slot(&id("a"), "big", "t4".into()).unwrap_err();
        assert_eq!(
            jobs.put(&big, Bytes::from(vec![0; MAX_UPLOADED_BYTES])),
            Err(UploadError::TooMany)
        );
        // Unused for a while, an upload is forgotten.
        jobs.lock().uploads[0].touched = Instant::now() - UPLOAD_TTL;
        assert_eq!(jobs.awaits("t4"), Ok(()));
        assert!(jobs.files(&id("a"), "h").is_none());
    }
}
