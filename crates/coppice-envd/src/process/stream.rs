//! The server stream of `Start` and `Connect`: `start{pid}`, the kept output, live output with
//! keepalives while idle, and the end event.

use std::collections::VecDeque;
use std::time::Duration;

use connectrpc::{ConnectError, ErrorCode};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::table::{Event, Exit, Subscription};
use crate::proto::process::ProcessEvent;
use crate::proto::process::process_event::{DataEvent, EndEvent, KeepAlive, StartEvent};

enum Phase {
    Start,
    Replay,
    Live(mpsc::Receiver<Event>),
    Done,
}

struct State {
    pid: u32,
    phase: Phase,
    replay: VecDeque<Event>,
    live: Option<mpsc::Receiver<Event>>,
    keepalive: Duration,
    deadline: Option<Instant>,
}

/// The events of process `pid` for one client. `deadline` ends the stream (not the process)
/// with `deadline_exceeded`.
pub fn events(
    pid: u32,
    subscription: Subscription,
    keepalive: Duration,
    deadline: Option<Instant>,
) -> impl Stream<Item = Result<ProcessEvent, ConnectError>> + Send + 'static {
    let state = State {
        pid,
        phase: Phase::Start,
        replay: subscription.replay,
        live: subscription.live,
        keepalive,
        deadline,
    };
    futures_util::stream::unfold(state, next)
}

async fn next(mut state: State) -> Option<(Result<ProcessEvent, ConnectError>, State)> {
    loop {
        match std::mem::replace(&mut state.phase, Phase::Done) {
            Phase::Done => return None,
            Phase::Start => {
                state.phase = Phase::Replay;
                let start = StartEvent {
                    pid: state.pid,
                    ..Default::default()
                };
                return Some((Ok(wrap(start.into())), state));
            }
            Phase::Replay => {
                if let Some(event) = state.replay.pop_front() {
                    state.phase = if matches!(event, Event::End(_)) {
                        Phase::Done
                    } else {
                        Phase::Replay
                    };
                    return Some((Ok(to_proto(event)), state));
                }
                match state.live.take() {
                    Some(live) => state.phase = Phase::Live(live),
                    None => return None,
                }
            }
            Phase::Live(mut live) => {
                let wait = match state.deadline {
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            let error = ConnectError::new(
                                ErrorCode::DeadlineExceeded,
                                "the stream's deadline passed; the process keeps running",
                            );
                            return Some((Err(error), state));
                        }
                        state.keepalive.min(deadline - now)
                    }
                    None => state.keepalive,
                };
                match tokio::time::timeout(wait, live.recv()).await {
                    Ok(Some(event)) => {
                        if !matches!(event, Event::End(_)) {
                            state.phase = Phase::Live(live);
                        }
                        return Some((Ok(to_proto(event)), state));
                    }
                    // The process table always sends the end before dropping the sender.
                    Ok(None) => return None,
                    Err(_) => {
                        state.phase = Phase::Live(live);
                        if state.deadline.is_some_and(|d| Instant::now() >= d) {
                            continue;
                        }
                        return Some((Ok(wrap(KeepAlive::default().into())), state));
                    }
                }
            }
        }
    }
}

fn wrap(event: crate::proto::process::__buffa::oneof::process_event::Event) -> ProcessEvent {
    ProcessEvent {
        event: Some(event),
        ..Default::default()
    }
}

fn to_proto(event: Event) -> ProcessEvent {
    use crate::proto::process::__buffa::oneof::process_event::data_event::Output;
    let data = |output: Output| -> ProcessEvent {
        wrap(
            DataEvent {
                output: Some(output),
                ..Default::default()
            }
            .into(),
        )
    };
    match event {
        Event::Stdout(bytes) => data(Output::Stdout(bytes.to_vec())),
        Event::Stderr(bytes) => data(Output::Stderr(bytes.to_vec())),
        Event::Pty(bytes) => data(Output::Pty(bytes.to_vec())),
        Event::End(exit) => wrap(end_event(exit).into()),
    }
}

fn end_event(exit: Exit) -> EndEvent {
    EndEvent {
        exit_code: exit.exit_code,
        exited: exit.exited,
        status: exit.status,
        error: exit.error,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;

    fn exit() -> Exit {
        Exit {
            exit_code: 3,
            exited: true,
            status: "exit status 3".into(),
            error: Some("exit status 3".into()),
        }
    }

    #[tokio::test]
    async fn test_stream_starts_with_pid_then_replays_then_ends() {
        let subscription = Subscription {
            replay: VecDeque::from([Event::Stdout(Bytes::from_static(b"hi")), Event::End(exit())]),
            live: None,
        };
        let events: Vec<_> = events(42, subscription, Duration::from_secs(90), None)
            .map(|event| serde_json::to_string(&event.unwrap()).unwrap())
            .collect()
            .await;
        assert_eq!(
            events,
            vec![
                r#"{"start":{"pid":42}}"#,
                r#"{"data":{"stdout":"aGk="}}"#,
                r#"{"end":{"exitCode":3,"exited":true,"status":"exit status 3","error":"exit status 3"}}"#,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn test_idle_stream_sends_keepalives_and_honours_its_deadline() {
        let (sender, receiver) = mpsc::channel(1);
        let subscription = Subscription {
            replay: VecDeque::new(),
            live: Some(receiver),
        };
        let deadline = Instant::now() + Duration::from_secs(25);
        let mut stream = Box::pin(events(
            1,
            subscription,
            Duration::from_secs(10),
            Some(deadline),
        ));
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => seen.push(serde_json::to_string(&event).unwrap()),
                Err(error) => {
                    seen.push(error.code.as_str().to_owned());
                    break;
                }
            }
        }
        drop(sender);
        assert_eq!(
            seen,
            vec![
                r#"{"start":{"pid":1}}"#,
                r#"{"keepalive":{}}"#,
                r#"{"keepalive":{}}"#,
                "deadline_exceeded"
            ]
        );
    }
}
