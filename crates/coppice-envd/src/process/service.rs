//! `process.Process`: the Connect handlers, translating between the wire messages and the
//! process table.

use std::sync::Arc;
use std::time::Duration;

use connectrpc::{
    ConnectError, InboundStream, RequestContext, Response, ServiceRequest, ServiceResult,
    ServiceStream,
};
use futures_util::StreamExt;

use super::spawn::{self, StartSpec};
use super::stream;
use super::table::Selector;
use crate::error::EnvdError;
use crate::proto::process::__buffa::oneof::process_input::Input as WireInput;
use crate::proto::process::__buffa::oneof::process_selector::Selector as WireSelector;
use crate::proto::process::__buffa::oneof::stream_input_request::Event as InputEvent;
use crate::proto::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
    ListResponse, Process, ProcessConfig, ProcessInfo, ProcessInput, ProcessSelector,
    SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse, Signal,
    StartRequest, StartResponse, StreamInputRequest, StreamInputResponse, UpdateRequest,
    UpdateResponse,
};
use crate::state::Envd;
use crate::{auth, rpc};

/// The `process.Process` service.
#[derive(Debug, Clone)]
pub struct ProcessService {
    envd: Arc<Envd>,
}

impl ProcessService {
    /// The service over shared state.
    #[must_use]
    pub fn new(envd: Arc<Envd>) -> Self {
        Self { envd }
    }

    fn keepalive(&self, ctx: &RequestContext) -> Duration {
        rpc::keepalive(ctx, self.envd.config.default_keepalive)
    }
}

fn selector(wire: Option<&ProcessSelector>) -> Result<Selector, EnvdError> {
    match wire.and_then(|s| s.selector.as_ref()) {
        Some(WireSelector::Pid(pid)) => Ok(Selector::Pid(*pid)),
        Some(WireSelector::Tag(tag)) => Ok(Selector::Tag(tag.clone())),
        None => Err(EnvdError::InvalidArgument(
            "the request names no process (pid or tag)".into(),
        )),
    }
}

fn input_bytes(input: Option<&ProcessInput>) -> Result<&[u8], EnvdError> {
    match input.and_then(|i| i.input.as_ref()) {
        Some(WireInput::Stdin(bytes) | WireInput::Pty(bytes)) => Ok(bytes),
        None => Err(EnvdError::InvalidArgument(
            "the request carries no input".into(),
        )),
    }
}

fn pty_size(pty: Option<&crate::proto::process::PTY>) -> Option<(u16, u16)> {
    let size = pty?.size.as_option().cloned().unwrap_or_default();
    let clamp = |value: u32, default: u16| match u16::try_from(value) {
        Ok(0) => default,
        Ok(value) => value,
        Err(_) => u16::MAX,
    };
    Some((clamp(size.cols, 80), clamp(size.rows, 24)))
}

impl Process for ProcessService {
    #[allow(refining_impl_trait)]
    async fn list(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        let processes = self
            .envd
            .processes
            .running()
            .iter()
            .map(|handle| ProcessInfo {
                config: buffa::MessageField::some(ProcessConfig {
                    cmd: handle.command.cmd.clone(),
                    args: handle.command.args.clone(),
                    envs: handle.command.envs.iter().cloned().collect(),
                    cwd: handle.command.cwd.clone(),
                    ..Default::default()
                }),
                pid: handle.pid,
                tag: handle.tag.clone(),
                ..Default::default()
            })
            .collect();
        Response::ok(ListResponse {
            processes,
            ..Default::default()
        })
    }

    #[allow(refining_impl_trait)]
    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        let request = request.to_owned_message();
        let handle = self
            .envd
            .processes
            .find(&selector(request.process.as_option())?)?;
        let deadline = rpc::deadline(&ctx);
        let events = stream::events(
            handle.pid,
            handle.subscribe(),
            self.keepalive(&ctx),
            deadline,
        )
        .map(|event| {
            event.map(|event| ConnectResponse {
                event: buffa::MessageField::some(event),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    #[allow(refining_impl_trait)]
    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        let request = request.to_owned_message();
        let user = self.envd.user(auth::basic_user(&ctx).as_deref())?;
        let Some(process) = request.process.as_option() else {
            return Err(EnvdError::InvalidArgument("the request names no process".into()).into());
        };
        if process.cmd.is_empty() {
            return Err(EnvdError::InvalidArgument("cmd is empty".into()).into());
        }
        let spec = StartSpec {
            cmd: process.cmd.clone(),
            args: process.args.clone(),
            envs: process
                .envs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: process.cwd.clone(),
            pty: pty_size(request.pty.as_option()),
            // Absent means open, as old envd always kept stdin open.
            stdin: request.stdin.unwrap_or(true),
            tag: request.tag.clone(),
            // The RPC's deadline is also the process's lifetime, as E2B's envd does it.
            timeout: rpc::timeout(&ctx),
        };
        let handle = spawn::start(&self.envd, &user, &spec)?;
        let subscription = handle.subscribe();
        let events =
            stream::events(handle.pid, subscription, self.keepalive(&ctx), None).map(|event| {
                event.map(|event| StartResponse {
                    event: buffa::MessageField::some(event),
                    ..Default::default()
                })
            });
        Ok(Response::new(Box::pin(events)))
    }

    #[allow(refining_impl_trait)]
    async fn update(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        let request = request.to_owned_message();
        let handle = self
            .envd
            .processes
            .find(&selector(request.process.as_option())?)?;
        if let Some((cols, rows)) = pty_size(request.pty.as_option()) {
            handle.resize(cols, rows).await?;
        }
        Response::ok(UpdateResponse::default())
    }

    #[allow(refining_impl_trait)]
    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: InboundStream<StreamInputRequest>,
    ) -> ServiceResult<StreamInputResponse> {
        let mut target = None;
        while let Some(message) = requests.next().await {
            let message = message?.to_owned_message();
            match message.event {
                Some(InputEvent::Start(start)) => {
                    let found = self
                        .envd
                        .processes
                        .find(&selector(start.process.as_option())?)?;
                    target = Some(found);
                }
                Some(InputEvent::Data(data)) => {
                    let Some(handle) = target.as_ref() else {
                        return Err(EnvdError::FailedPrecondition(
                            "input arrived before the start message".into(),
                        )
                        .into());
                    };
                    handle
                        .write_input(input_bytes(data.input.as_option())?)
                        .await?;
                }
                Some(InputEvent::Keepalive(_)) | None => {}
            }
        }
        Response::ok(StreamInputResponse::default())
    }

    #[allow(refining_impl_trait)]
    async fn send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        let request = request.to_owned_message();
        let handle = self
            .envd
            .processes
            .find(&selector(request.process.as_option())?)?;
        handle
            .write_input(input_bytes(request.input.as_option())?)
            .await?;
        Response::ok(SendInputResponse::default())
    }

    #[allow(refining_impl_trait)]
    async fn send_signal(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        let request = request.to_owned_message();
        let handle = self
            .envd
            .processes
            .find(&selector(request.process.as_option())?)?;
        if handle.has_ended() {
            return Err(EnvdError::NotFound(format!(
                "process with pid {} not found (it has ended)",
                handle.pid
            ))
            .into());
        }
        let signal = match request.signal.as_known() {
            Some(Signal::SIGNAL_SIGKILL) => rustix::process::Signal::KILL,
            Some(Signal::SIGNAL_SIGTERM) => rustix::process::Signal::TERM,
            _ => {
                return Err(ConnectError::from(EnvdError::InvalidArgument(format!(
                    "unsupported signal {:?}",
                    request.signal
                ))));
            }
        };
        spawn::signal(handle.pid, signal)?;
        Response::ok(SendSignalResponse::default())
    }

    #[allow(refining_impl_trait)]
    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        let request = request.to_owned_message();
        let handle = self
            .envd
            .processes
            .find(&selector(request.process.as_option())?)?;
        handle.close_input().await?;
        Response::ok(CloseStdinResponse::default())
    }
}
