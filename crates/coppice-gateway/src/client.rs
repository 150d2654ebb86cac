//! A typed client of a coppice gateway, as the `coppice` CLI uses it: the control plane
//! (`X-API-KEY`) and a sandbox's envd through the gateway (`E2b-Sandbox-*` headers plus the
//! sandbox's access token). Plain HTTP/1.1.

use std::collections::BTreeMap;

mod storage;
mod templates;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// What went wrong talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not usable.
    #[error("bad URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection failed.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// Where.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The gateway or envd refused the request.
    #[error("{status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error message it gave.
        message: String,
    },
    /// The answer did not parse.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// A sandbox as the control plane lists it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// Its id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Its template.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// `running` or `paused`.
    pub state: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub end_at: String,
    /// vCPUs.
    pub cpu_count: u32,
    /// Memory.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// envd's token (in `info` only).
    #[serde(default, skip_serializing)]
    pub envd_access_token: Option<String>,
}

/// A created sandbox.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Created {
    /// Its id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Its template.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// envd's token.
    #[serde(rename = "envdAccessToken", default, skip_serializing)]
    pub envd_access_token: Option<String>,
}

/// One output event of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The command started with this pid.
    Started(u32),
    /// Bytes on stdout.
    Stdout(Vec<u8>),
    /// Bytes on stderr.
    Stderr(Vec<u8>),
    /// Bytes from its terminal.
    Pty(Vec<u8>),
    /// It ended with this exit code (-1 for a signal).
    Exited(i32),
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    api_url: String,
    sandbox_url: String,
    api_key: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

type Response = hyper::Response<hyper::body::Incoming>;

impl Client {
    /// A client of the gateway at `api_url` (sandbox traffic to `sandbox_url`, by default the
    /// same), authenticating with `api_key`.
    pub fn new(api_url: &str, sandbox_url: Option<&str>, api_key: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            api_url: api_url.trim_end_matches('/').to_owned(),
            sandbox_url: sandbox_url
                .unwrap_or(api_url)
                .trim_end_matches('/')
                .to_owned(),
            api_key: api_key.to_owned(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let url = request.uri().to_string();
        self.http
            .request(request)
            .await
            .map_err(|e| ClientError::Transport {
                url,
                source: Box::new(e),
            })
    }

    fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let url = format!("{}{path}", self.api_url);
        hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-api-key", &self.api_key)
            .header("content-type", "application/json")
            .body(Full::new(
                body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())),
            ))
            .map_err(|e| ClientError::Url {
                url,
                reason: e.to_string(),
            })
    }

    fn sandbox(
        &self,
        sandbox: &Created,
        method: &str,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let url = format!("{}{path_and_query}", self.sandbox_url);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("e2b-sandbox-id", &sandbox.sandbox_id)
            .header("e2b-sandbox-port", "49983")
            .header("content-type", content_type);
        if let Some(token) = &sandbox.envd_access_token {
            request = request.header("x-access-token", token);
        }
        request.body(Full::new(body)).map_err(|e| ClientError::Url {
            url,
            reason: e.to_string(),
        })
    }

    /// Reads a whole answer; a non-2xx becomes [`ClientError::Status`] with its message.
    async fn whole(response: Response) -> Result<(u16, Bytes), ClientError> {
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
            .to_bytes();
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Status { status, message })
    }

    fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Whether the gateway answers `GET /health` with 200.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn health(&self) -> Result<(), ClientError> {
        let url = format!("{}/health", self.api_url);
        let request = hyper::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url {
                url,
                reason: e.to_string(),
            })?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Creates a sandbox.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create(
        &self,
        template: &str,
        timeout_secs: Option<u64>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Created, ClientError> {
        let mut body = serde_json::json!({ "templateID": template, "metadata": metadata });
        if let Some(timeout) = timeout_secs {
            body["timeout"] = timeout.into();
        }
        let response = self
            .send(self.api("POST", "/v2/sandboxes", Some(body))?)
            .await?;
        let (_, bytes) = Self::whole(response).await?;
        Self::json(&bytes)
    }

    /// Every running or paused sandbox.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list(&self) -> Result<Vec<SandboxInfo>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(token) => format!("/v2/sandboxes?nextToken={token}"),
                None => "/v2/sandboxes".to_owned(),
            };
            let response = self.send(self.api("GET", &path, None)?).await?;
            token = response
                .headers()
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let (_, bytes) = Self::whole(response).await?;
            all.extend(Self::json::<Vec<SandboxInfo>>(&bytes)?);
            if token.is_none() {
                return Ok(all);
            }
        }
    }

    /// One sandbox, with its access token.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown sandbox).
    pub async fn info(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        let response = self
            .send(self.api("GET", &format!("/sandboxes/{id}"), None)?)
            .await?;
        let (_, bytes) = Self::whole(response).await?;
        Self::json(&bytes)
    }

    /// Kills a sandbox.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn kill(&self, id: &str) -> Result<(), ClientError> {
        let response = self
            .send(self.api("DELETE", &format!("/sandboxes/{id}"), None)?)
            .await?;
        Self::whole(response).await.map(drop)
    }

    /// Sets a sandbox's end time to now plus `seconds`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn set_timeout(&self, id: &str, seconds: u64) -> Result<(), ClientError> {
        let body = serde_json::json!({ "timeout": seconds });
        let request = self.api("POST", &format!("/sandboxes/{id}/timeout"), Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Replaces a sandbox's egress policy.
    ///
    /// # Errors
    /// [`ClientError`] (400 for an entry that is not a CIDR or address).
    pub async fn update_network(
        &self,
        id: &str,
        allow_internet: bool,
        allow_out: &[String],
        deny_out: &[String],
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "allow_internet_access": allow_internet,
            "allowOut": allow_out,
            "denyOut": deny_out,
        });
        let request = self.api("PUT", &format!("/sandboxes/{id}/network"), Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Pauses a sandbox, keeping its memory or (`keep_memory` false) only its filesystem.
    ///
    /// # Errors
    /// [`ClientError`] (409 when it is already paused).
    pub async fn pause(&self, id: &str, keep_memory: bool) -> Result<(), ClientError> {
        let body = serde_json::json!({ "memory": keep_memory });
        let request = self.api("POST", &format!("/sandboxes/{id}/pause"), Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Pauses a sandbox durably: its memory is written to disk at once and freed (it stays
    /// in memory where the sandbox cannot be written to disk).
    ///
    /// # Errors
    /// [`ClientError`] (409 when it is already paused).
    pub async fn pause_durably(&self, id: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "memory": true, "durable": true });
        let request = self.api("POST", &format!("/sandboxes/{id}/pause"), Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Resumes a paused sandbox (or extends a running one's end time) for `timeout_secs`;
    /// returns whether it was paused.
    ///
    /// # Errors
    /// [`ClientError`] (404 for a killed sandbox).
    pub async fn connect(&self, id: &str, timeout_secs: Option<u64>) -> Result<bool, ClientError> {
        let mut body = serde_json::json!({});
        if let Some(timeout) = timeout_secs {
            body["timeout"] = timeout.into();
        }
        let request = self.api("POST", &format!("/v2/sandboxes/{id}/connect"), Some(body))?;
        let (status, _) = Self::whole(self.send(request).await?).await?;
        Ok(status == 201)
    }

    /// Snapshots a sandbox's filesystem as template `name` (generated when `None`); returns
    /// the snapshot's id.
    ///
    /// # Errors
    /// [`ClientError`] (409 for a taken name).
    pub async fn snapshot(&self, id: &str, name: Option<&str>) -> Result<String, ClientError> {
        let mut body = serde_json::json!({});
        if let Some(name) = name {
            body["name"] = name.into();
        }
        let request = self.api("POST", &format!("/sandboxes/{id}/snapshots"), Some(body))?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        let value: serde_json::Value = Self::json(&bytes)?;
        Ok(value["snapshotID"].as_str().unwrap_or_default().to_owned())
    }

    /// Snapshot ids, of sandbox `of` when given.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn snapshots(&self, of: Option<&str>) -> Result<Vec<String>, ClientError> {
        let path = match of {
            Some(id) => format!("/snapshots?sandboxID={id}"),
            None => "/snapshots".to_owned(),
        };
        let (_, bytes) = Self::whole(self.send(self.api("GET", &path, None)?).await?).await?;
        let value: Vec<serde_json::Value> = Self::json(&bytes)?;
        Ok(value
            .iter()
            .filter_map(|s| s["snapshotID"].as_str().map(str::to_owned))
            .collect())
    }

    /// Deletes a snapshot (a template).
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown one).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), ClientError> {
        let request = self.api("DELETE", &format!("/templates/{id}"), None)?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Starts `count` forks of a sandbox; each slot is the fork or why it failed.
    ///
    /// # Errors
    /// [`ClientError`] for the call as a whole.
    pub async fn fork(
        &self,
        id: &str,
        count: u32,
        timeout_secs: Option<u64>,
    ) -> Result<Vec<Result<Created, String>>, ClientError> {
        let mut body = serde_json::json!({ "count": count });
        if let Some(timeout) = timeout_secs {
            body["timeout"] = timeout.into();
        }
        let request = self.api("POST", &format!("/sandboxes/{id}/fork"), Some(body))?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        let slots: Vec<serde_json::Value> = Self::json(&bytes)?;
        Ok(slots
            .into_iter()
            .map(
                |slot| match serde_json::from_value::<Created>(slot["sandbox"].clone()) {
                    Ok(created) => Ok(created),
                    Err(_) => Err(slot["error"]["message"]
                        .as_str()
                        .unwrap_or("the fork did not start")
                        .to_owned()),
                },
            )
            .collect())
    }

    /// A sandbox's lifecycle log: (timestamp, line).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn logs(&self, id: &str) -> Result<Vec<(String, String)>, ClientError> {
        let response = self
            .send(self.api("GET", &format!("/sandboxes/{id}/logs"), None)?)
            .await?;
        let (_, bytes) = Self::whole(response).await?;
        let value: serde_json::Value = Self::json(&bytes)?;
        Ok(value["logs"]
            .as_array()
            .map(|logs| {
                logs.iter()
                    .map(|l| {
                        (
                            l["timestamp"].as_str().unwrap_or_default().to_owned(),
                            l["line"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A handle for envd calls on sandbox `id` (looks its token up).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn attach(&self, id: &str) -> Result<Created, ClientError> {
        let info = self.info(id).await?;
        Ok(Created {
            sandbox_id: info.sandbox_id,
            template_id: info.template_id,
            envd_access_token: info.envd_access_token,
        })
    }

    /// Starts a process (`argv[0]` with the rest as arguments; a terminal of `pty` columns
    /// and rows if given) and calls `on_output` for each event until it ends; returns its
    /// exit code.
    ///
    /// # Errors
    /// [`ClientError`], including envd's refusal (e.g. a missing cwd).
    pub async fn run(
        &self,
        sandbox: &Created,
        argv: &[String],
        user: Option<&str>,
        pty: Option<(u16, u16)>,
        mut on_output: impl FnMut(Output),
    ) -> Result<i32, ClientError> {
        let (cmd, args) = argv
            .split_first()
            .ok_or_else(|| ClientError::Decode("empty command".into()))?;
        let mut message = serde_json::json!({
            "process": { "cmd": cmd, "args": args },
            "stdin": pty.is_some(),
        });
        if let Some((cols, rows)) = pty {
            message["pty"] = serde_json::json!({ "size": { "cols": cols, "rows": rows } });
        }
        let payload = message.to_string();
        let mut framed = BytesMut::with_capacity(payload.len() + 5);
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        framed.extend_from_slice(payload.as_bytes());
        let mut request = self.sandbox(
            sandbox,
            "POST",
            "/process.Process/Start",
            "application/connect+json",
            framed.freeze(),
        )?;
        if let Some(user) = user {
            let encoded = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:"),
            );
            if let Ok(value) = hyper::header::HeaderValue::from_str(&format!("Basic {encoded}")) {
                request
                    .headers_mut()
                    .insert(hyper::header::AUTHORIZATION, value);
            }
        }
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(Self::whole(response)
                .await
                .err()
                .unwrap_or(ClientError::Decode("stream refused".into())));
        }
        let mut body = BodyStream::new(response.into_body());
        let mut buffer = BytesMut::new();
        let mut exit = None;
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| ClientError::Decode(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
            while buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() < 5 + len {
                    break;
                }
                let flags = buffer[0];
                buffer.advance(5);
                let payload = buffer.split_to(len);
                let value: serde_json::Value = Self::json(&payload)?;
                if flags & 2 != 0 {
                    if let Some(error) = value.get("error") {
                        return Err(ClientError::Status {
                            status: 200,
                            message: format!(
                                "{}: {}",
                                error["code"].as_str().unwrap_or("unknown"),
                                error["message"].as_str().unwrap_or("")
                            ),
                        });
                    }
                    continue;
                }
                let event = &value["event"];
                if let Some(pid) = event["start"]["pid"].as_u64() {
                    on_output(Output::Started(u32::try_from(pid).unwrap_or(0)));
                } else if let Some(data) = event.get("data") {
                    for (key, wrap) in [
                        ("stdout", Output::Stdout as fn(Vec<u8>) -> Output),
                        ("stderr", Output::Stderr),
                        ("pty", Output::Pty),
                    ] {
                        if let Some(encoded) = data[key].as_str() {
                            let bytes = base64::Engine::decode(
                                &base64::engine::general_purpose::STANDARD,
                                encoded,
                            )
                            .map_err(|e| ClientError::Decode(e.to_string()))?;
                            on_output(wrap(bytes));
                        }
                    }
                } else if let Some(end) = event.get("end") {
                    let code = end["exitCode"].as_i64().unwrap_or(0);
                    let code = i32::try_from(code).unwrap_or(-1);
                    exit = Some(code);
                    on_output(Output::Exited(code));
                }
            }
        }
        exit.ok_or_else(|| ClientError::Decode("the stream ended without an end event".into()))
    }

    /// Sends bytes to a running process's terminal (or stdin).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn send_input(
        &self,
        sandbox: &Created,
        pid: u32,
        data: &[u8],
        pty: bool,
    ) -> Result<(), ClientError> {
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
        let key = if pty { "pty" } else { "stdin" };
        let body = serde_json::json!({ "process": { "pid": pid }, "input": { key: encoded } });
        self.unary(sandbox, "process.Process/SendInput", &body)
            .await
            .map(drop)
    }

    /// Resizes a process's terminal.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn resize(
        &self,
        sandbox: &Created,
        pid: u32,
        cols: u16,
        rows: u16,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "process": { "pid": pid }, "pty": { "size": { "cols": cols, "rows": rows } } });
        self.unary(sandbox, "process.Process/Update", &body)
            .await
            .map(drop)
    }

    /// A unary envd call with a JSON body.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn unary(
        &self,
        sandbox: &Created,
        rpc: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.sandbox(
            sandbox,
            "POST",
            &format!("/{rpc}"),
            "application/json",
            Bytes::from(body.to_string()),
        )?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// A file's bytes.
    ///
    /// # Errors
    /// [`ClientError`] (404 for a missing file).
    pub async fn read_file(&self, sandbox: &Created, path: &str) -> Result<Bytes, ClientError> {
        let query = serde_urlencoded::to_string([("path", path)])
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let request = self.sandbox(
            sandbox,
            "GET",
            &format!("/files?{query}"),
            "application/octet-stream",
            Bytes::new(),
        )?;
        Self::whole(self.send(request).await?).await.map(|(_, b)| b)
    }

    /// Writes a file (parents created).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn write_file(
        &self,
        sandbox: &Created,
        path: &str,
        data: Bytes,
    ) -> Result<(), ClientError> {
        let query = serde_urlencoded::to_string([("path", path)])
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let request = self.sandbox(
            sandbox,
            "POST",
            &format!("/files?{query}"),
            "application/octet-stream",
            data,
        )?;
        Self::whole(self.send(request).await?).await.map(drop)
    }
}
