//! `GET /files` (download, streamed, with ranges) and `POST /files` (multipart with one or
//! many files, or a raw octet-stream body), streamed to disk and given to the requesting user.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::auth::{self, FileOperation, FileSigning};
use crate::error::EnvdError;
use crate::filesystem::entry::write_metadata;
use crate::filesystem::{ensure_dirs, give_to};
use crate::state::Envd;
use crate::users::User;

/// Chunk size of downloads.
const DOWNLOAD_CHUNK: usize = 1 << 20;
/// Chunks read ahead of the socket on downloads.
const READ_AHEAD: usize = 4;
/// Chunks queued between the request body and the file writer.
const WRITE_QUEUE: usize = 16;
/// Prefix of headers that carry file metadata.
const METADATA_HEADER_PREFIX: &str = "x-metadata-";

/// The query of both `/files` routes.
#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// One written file, as the SDKs read it.
#[derive(Debug, Serialize)]
struct WrittenFile {
    path: String,
    name: String,
    r#type: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "metadata_map")]
    metadata: Vec<(String, String)>,
}

fn metadata_map<S: serde::Serializer>(
    metadata: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(metadata.iter().map(|(k, v)| (k, v)))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Authenticates the request and resolves its user.
fn authorize(
    envd: &Envd,
    headers: &HeaderMap,
    query: &FilesQuery,
    operation: FileOperation,
) -> Result<User, EnvdError> {
    let signing = FileSigning {
        path: query.path.as_deref().unwrap_or(""),
        username: query.username.as_deref().unwrap_or(""),
        signature: query.signature.as_deref(),
        expiration: query.signature_expiration,
    };
    auth::check_file_access(envd, headers, operation, &signing, now_unix())?;
    envd.user(query.username.as_deref())
}

fn resolve(envd: &Envd, user: &User, raw: &str) -> Result<PathBuf, EnvdError> {
    crate::paths::resolve(raw, &user.home, &envd.default_dir(user))
}

/// `GET /files?path=…`.
pub async fn download(State(envd): State<Arc<Envd>>, request: Request) -> Response {
    match download_inner(&envd, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn download_inner(envd: &Envd, request: Request) -> Result<Response, EnvdError> {
    let Query(query) = Query::<FilesQuery>::try_from_uri(request.uri())
        .map_err(|e| EnvdError::InvalidArgument(format!("bad query: {e}")))?;
    let user = authorize(envd, request.headers(), &query, FileOperation::Read)?;
    let path = resolve(envd, &user, query.path.as_deref().unwrap_or(""))?;
    match tokio::fs::metadata(&path).await {
        Ok(metadata) if metadata.is_dir() => {
            return Err(EnvdError::InvalidArgument(format!(
                "path '{}' is a directory",
                path.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EnvdError::NotFound(format!(
                "path '{}' does not exist",
                path.display()
            )));
        }
        Err(e) => return Err(EnvdError::io(&path.display().to_string(), &e)),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let conditional = [
        header::RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| request.headers().contains_key(name));
    let mut response = if conditional {
        // Ranges and validators: the full HTTP semantics of a static file server.
        let service =
            tower_http::services::ServeFile::new(&path).with_buf_chunk_size(DOWNLOAD_CHUNK);
        match service.oneshot(request).await {
            Ok(response) => response.map(axum::body::Body::new),
            Err(never) => match never {},
        }
    } else {
        stream_file(&path).await?
    };
    if let Ok(value) = HeaderValue::from_str(&format!("inline; filename={name:?}")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A file as read for a download: small ones whole, so that their length is what was read.
enum Download {
    /// The whole file (it ended within the first chunk).
    Whole(Vec<u8>),
    /// A larger file: its first chunk, the rest still to read, and the length promised.
    Streamed {
        head: Vec<u8>,
        file: std::fs::File,
        len: u64,
    },
}

/// Opens `path` and reads its first chunk. A file rewritten while it is read (a counter, a
/// log rotated in place) must not make the answer break off: the promised length is what was
/// read for a small file, and never less than the head for a larger one.
fn open_download(path: &Path) -> Result<Download, EnvdError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| EnvdError::io(&format!("open '{}'", path.display()), &e))?;
    let mut head = Vec::new();
    (&mut file)
        .take(DOWNLOAD_CHUNK as u64)
        .read_to_end(&mut head)
        .map_err(|e| EnvdError::io(&format!("read '{}'", path.display()), &e))?;
    if head.len() < DOWNLOAD_CHUNK {
        return Ok(Download::Whole(head));
    }
    let len = file
        .metadata()
        .map_err(|e| EnvdError::io(&format!("stat '{}'", path.display()), &e))?
        .len()
        .max(head.len() as u64);
    Ok(Download::Streamed { head, file, len })
}

/// The whole file as a 200: a small one at once, a larger one streamed by a blocking thread a
/// few chunks ahead of the socket (the common download, without range or validators).
async fn stream_file(path: &Path) -> Result<Response, EnvdError> {
    let owned = path.to_owned();
    let download = tokio::task::spawn_blocking(move || open_download(&owned))
        .await
        .map_err(|e| EnvdError::Internal(format!("read the download: {e}")))??;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let (len, body) = match download {
        Download::Whole(bytes) => (bytes.len() as u64, axum::body::Body::from(bytes)),
        Download::Streamed { head, file, len } => (len, streamed_body(head, file, len)),
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, mime.as_ref())
        .body(body)
        .map_err(|e| EnvdError::Internal(format!("build the download response: {e}")))
}

/// Exactly `len` bytes: `head`, then the rest of `file` up to `len`. A file that grows is cut
/// at `len`; one that shrinks below it ends the body with an error, so the client sees a
/// short read rather than a silently shorter file.
fn streamed_body(head: Vec<u8>, file: std::fs::File, len: u64) -> axum::body::Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    let rest = len.saturating_sub(head.len() as u64);
    tokio::task::spawn_blocking(move || {
        if sender.blocking_send(Ok(Bytes::from(head))).is_err() {
            return;
        }
        let mut file = file.take(rest);
        let mut sent = 0u64;
        while sent < rest {
            let mut buffer = bytes::BytesMut::zeroed(DOWNLOAD_CHUNK);
            match file.read(&mut buffer) {
                Ok(0) => {
                    let shrank = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    );
                    let _ = sender.blocking_send(Err(shrank));
                    return;
                }
                Ok(n) => {
                    buffer.truncate(n);
                    sent += n as u64;
                    if sender.blocking_send(Ok(buffer.freeze())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    axum::body::Body::from_stream(tokio_stream_of(receiver))
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// `POST /files`.
pub async fn upload(State(envd): State<Arc<Envd>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (drainable, body) = super::drain::DrainableBody::new(body);
    let outcome = upload_inner(&envd, Request::from_parts(parts, body)).await;
    // Read to its end, the connection stays usable and the client gets this answer.
    drainable.drain().await;
    match outcome {
        Ok(written) => axum::Json(written).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn upload_inner(envd: &Arc<Envd>, request: Request) -> Result<Vec<WrittenFile>, EnvdError> {
    let Query(query) = Query::<FilesQuery>::try_from_uri(request.uri())
        .map_err(|e| EnvdError::InvalidArgument(format!("bad query: {e}")))?;
    let user = authorize(envd, request.headers(), &query, FileOperation::Write)?;
    let metadata = metadata_headers(request.headers())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| EnvdError::InvalidArgument(format!("bad multipart body: {e}")))?;
        let mut written = Vec::new();
        let mut seen = HashSet::new();
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| EnvdError::InvalidArgument(format!("bad multipart body: {e}")))?
        {
            if field.name() != Some("file") {
                continue;
            }
            // The part's filename is the destination path; `path` in the query wins.
            let raw = match (query.path.as_deref(), field.file_name()) {
                (Some(path), _) if !path.is_empty() => path.to_owned(),
                (_, Some(name)) if !name.is_empty() => name.to_owned(),
                _ => {
                    return Err(EnvdError::InvalidArgument(
                        "a file part has no filename and the query no path".into(),
                    ));
                }
            };
            let path = resolve(envd, &user, &raw)?;
            if !seen.insert(path.clone()) {
                return Err(EnvdError::InvalidArgument(format!(
                    "path '{}' appears twice in one upload",
                    path.display()
                )));
            }
            write_file(&path, &user, &mut field).await?;
            written.push(finish(&path, &metadata)?);
        }
        if written.is_empty() {
            return Err(EnvdError::InvalidArgument(
                "the multipart body has no part named 'file'".into(),
            ));
        }
        Ok(written)
    } else if content_type.starts_with("application/octet-stream") {
        let Some(raw) = query.path.as_deref().filter(|p| !p.is_empty()) else {
            return Err(EnvdError::InvalidArgument(
                "an octet-stream upload needs ?path=".into(),
            ));
        };
        let path = resolve(envd, &user, raw)?;
        write_file(&path, &user, request.into_body().into_data_stream()).await?;
        Ok(vec![finish(&path, &metadata)?])
    } else {
        Err(EnvdError::InvalidArgument(format!(
            "unsupported content type '{content_type}': send multipart/form-data or application/octet-stream"
        )))
    }
}

fn finish(path: &Path, metadata: &[(String, String)]) -> Result<WrittenFile, EnvdError> {
    if !metadata.is_empty() {
        write_metadata(path, metadata)?;
    }
    Ok(WrittenFile {
        path: path.display().to_string(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        r#type: "file",
        metadata: metadata.to_vec(),
    })
}

/// `X-Metadata-<Key>: <value>` headers, keys lowercased; values must be printable ASCII.
fn metadata_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, EnvdError> {
    let mut metadata = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| {
                EnvdError::InvalidArgument(format!("metadata '{key}' is not printable ASCII"))
            })?;
        metadata.push((key.to_owned(), value.to_owned()));
    }
    metadata.sort();
    Ok(metadata)
}

/// Streams `chunks` into `path` (created or truncated, parents created, owned by `user`).
/// A writer thread does the disk I/O so that the body is read while the disk writes.
async fn write_file<S, E>(path: &Path, user: &User, chunks: S) -> Result<(), EnvdError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    if let Some(parent) = path.parent() {
        ensure_dirs(parent, user)?;
    }
    if path.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "path '{}' is a directory",
            path.display()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| EnvdError::io(&format!("open '{}'", path.display()), &e))?;
    give_to(path, user)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let target = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        while let Some(chunk) = receiver.blocking_recv() {
            file.write_all(&chunk)
                .map_err(|e| EnvdError::io(&format!("write '{}'", target.display()), &e))?;
        }
        Ok::<(), EnvdError>(())
    });
    futures_util::pin_mut!(chunks);
    let mut body_error = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => {
                if sender.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                body_error = Some(EnvdError::InvalidArgument(format!(
                    "reading the upload body: {e}"
                )));
                break;
            }
        }
    }
    drop(sender);
    writer
        .await
        .map_err(|e| EnvdError::Internal(format!("writer task: {e}")))??;
    body_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;

    const LARGE: usize = 3 * DOWNLOAD_CHUNK + 5;

    fn large_file(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("large");
        let contents: Vec<u8> = (0..=250u8).cycle().take(LARGE).collect();
        std::fs::write(&path, &contents).unwrap();
        (path, contents)
    }

    fn streamed(path: &Path) -> (Vec<u8>, std::fs::File, u64) {
        match open_download(path).unwrap() {
            Download::Streamed { head, file, len } => (head, file, len),
            Download::Whole(_) => panic!("a file of {LARGE} bytes is streamed"),
        }
    }

    #[test]
    fn test_a_small_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::write(&path, b"seven\n").unwrap();
        assert!(
            matches!(open_download(&path).unwrap(), Download::Whole(bytes) if bytes == b"seven\n")
        );
    }

    #[tokio::test]
    async fn test_a_large_file_that_grows_while_it_is_read_is_cut_at_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let (path, contents) = large_file(dir.path());
        let (head, file, len) = streamed(&path);
        assert_eq!(len, LARGE as u64);
        let mut appender = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        appender.write_all(&[1u8; 4096]).unwrap();
        let body = streamed_body(head, file, len)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), LARGE);
        assert!(body[..] == contents[..]);
    }

    #[tokio::test]
    async fn test_a_large_file_that_shrinks_while_it_is_read_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = large_file(dir.path());
        let (head, file, len) = streamed(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2 * DOWNLOAD_CHUNK as u64)
            .unwrap();
        let error = streamed_body(head, file, len).collect().await.unwrap_err();
        assert!(error.to_string().contains("shrank"), "{error}");
    }
}
