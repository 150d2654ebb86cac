//! The processes envd started: each one's output history, its live subscribers, its input and
//! its end, kept for a while after it exits so that a late `Connect` still gets the end event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::EnvdError;

/// Queue depth per subscriber; a slow client holds the process back instead of growing memory.
const SUBSCRIBER_QUEUE: usize = 64;

/// One output or end event of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes the process wrote to stdout.
    Stdout(Bytes),
    /// Bytes the process wrote to stderr.
    Stderr(Bytes),
    /// Bytes read from the process's terminal.
    Pty(Bytes),
    /// The process ended; always the last event.
    End(Exit),
}

impl Event {
    fn output_len(&self) -> usize {
        match self {
            Self::Stdout(bytes) | Self::Stderr(bytes) | Self::Pty(bytes) => bytes.len(),
            Self::End(_) => 0,
        }
    }
}

/// How a process ended, in the words envd uses on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or -1 when a signal ended it.
    pub exit_code: i32,
    /// Whether it exited by itself (false when a signal ended it).
    pub exited: bool,
    /// `exit status N` or `signal: killed`, as Go's `ProcessState.String()` prints it.
    pub status: String,
    /// Set when the process did not exit with 0.
    pub error: Option<String>,
}

/// What the command line was, as `List` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandLine {
    /// The program.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The environment the request added.
    pub envs: Vec<(String, String)>,
    /// The working directory, as resolved.
    pub cwd: Option<String>,
}

/// Where input to a process goes.
#[derive(Debug)]
pub enum Input {
    /// The write end of its stdin pipe.
    Pipe(tokio::net::unix::pipe::Sender),
    /// Its terminal.
    Pty(pty_process::OwnedWritePty),
}

/// A process started by envd.
#[derive(Debug)]
pub struct ProcessHandle {
    /// Its pid (in the sandbox's PID namespace).
    pub pid: u32,
    /// Its caller-chosen tag.
    pub tag: Option<String>,
    /// How it was started.
    pub command: CommandLine,
    input: tokio::sync::Mutex<Option<Input>>,
    output: Mutex<Output>,
    history_limit: usize,
}

#[derive(Debug, Default)]
struct Output {
    history: VecDeque<Event>,
    history_bytes: usize,
    subscribers: Vec<mpsc::Sender<Event>>,
    end: Option<Exit>,
}

/// What a new subscriber gets: everything kept so far, then the live feed (none once ended).
#[derive(Debug)]
pub struct Subscription {
    /// Events already emitted, oldest first (including the end, if the process has ended).
    pub replay: VecDeque<Event>,
    /// Later events; `None` when `replay` already holds the end.
    pub live: Option<mpsc::Receiver<Event>>,
}

impl ProcessHandle {
    /// A handle for a process that just started.
    #[must_use]
    pub fn new(
        pid: u32,
        tag: Option<String>,
        command: CommandLine,
        input: Option<Input>,
        history_limit: usize,
    ) -> Self {
        Self {
            pid,
            tag,
            command,
            input: tokio::sync::Mutex::new(input),
            output: Mutex::new(Output::default()),
            history_limit,
        }
    }

    fn output(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the process has ended.
    #[must_use]
    pub fn has_ended(&self) -> bool {
        self.output().end.is_some()
    }

    /// Subscribes to the output: the kept history, then live events.
    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        let mut output = self.output();
        let mut replay = output.history.clone();
        if let Some(end) = &output.end {
            replay.push_back(Event::End(end.clone()));
            return Subscription { replay, live: None };
        }
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        output.subscribers.push(sender);
        Subscription {
            replay,
            live: Some(receiver),
        }
    }

    /// Records output and hands it to every subscriber, waiting for slow ones.
    pub async fn publish(&self, event: Event) {
        let subscribers = {
            let mut output = self.output();
            output.history_bytes += event.output_len();
            output.history.push_back(event.clone());
            // Oldest output goes first once over the bound; at least the newest chunk stays.
            while output.history_bytes > self.history_limit && output.history.len() > 1 {
                if let Some(dropped) = output.history.pop_front() {
                    output.history_bytes -= dropped.output_len();
                }
            }
            output.subscribers.retain(|sender| !sender.is_closed());
            output.subscribers.clone()
        };
        for subscriber in subscribers {
            // A subscriber that went away is pruned on the next publish.
            let _ = subscriber.send(event.clone()).await;
        }
    }

    /// Records the end and delivers it; the live feeds close after it.
    pub async fn finish(&self, exit: Exit) {
        let subscribers = {
            let mut output = self.output();
            output.end = Some(exit.clone());
            std::mem::take(&mut output.subscribers)
        };
        for subscriber in subscribers {
            let _ = subscriber.send(Event::End(exit.clone())).await;
        }
        *self.input.lock().await = None;
    }

    /// Writes `data` to the process's stdin or terminal.
    ///
    /// # Errors
    /// [`EnvdError::FailedPrecondition`] when its input is closed; I/O errors.
    pub async fn write_input(&self, data: &[u8]) -> Result<(), EnvdError> {
        let mut input = self.input.lock().await;
        let result = match input.as_mut() {
            None => {
                return Err(EnvdError::FailedPrecondition(format!(
                    "stdin of process {} is closed or was not requested",
                    self.pid
                )));
            }
            Some(Input::Pipe(pipe)) => pipe.write_all(data).await,
            Some(Input::Pty(pty)) => pty.write_all(data).await,
        };
        result.map_err(|e| EnvdError::io(&format!("write to process {}", self.pid), &e))
    }

    /// Closes stdin (the process then reads end-of-file). A terminal is left open: it gets
    /// end-of-transmission as input instead.
    ///
    /// # Errors
    /// [`EnvdError::FailedPrecondition`] for a process with a terminal.
    pub async fn close_input(&self) -> Result<(), EnvdError> {
        let mut input = self.input.lock().await;
        if matches!(input.as_ref(), Some(Input::Pty(_))) {
            return Err(EnvdError::FailedPrecondition(format!(
                "process {} has a terminal; send end-of-transmission (0x04) instead",
                self.pid
            )));
        }
        *input = None;
        Ok(())
    }

    /// Resizes the process's terminal.
    ///
    /// # Errors
    /// [`EnvdError::FailedPrecondition`] for a process without a terminal.
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), EnvdError> {
        let input = self.input.lock().await;
        match input.as_ref() {
            Some(Input::Pty(pty)) => pty
                .resize(pty_process::Size::new(rows, cols))
                .map_err(|e| EnvdError::Internal(format!("resize terminal: {e}"))),
            _ => Err(EnvdError::FailedPrecondition(format!(
                "process {} has no terminal",
                self.pid
            ))),
        }
    }
}

/// Every process envd started and has not yet forgotten.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: Mutex<HashMap<u32, Arc<ProcessHandle>>>,
}

/// How a request names a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By pid.
    Pid(u32),
    /// By the tag given at start.
    Tag(String),
}

impl ProcessTable {
    fn map(&self) -> MutexGuard<'_, HashMap<u32, Arc<ProcessHandle>>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a started process.
    pub fn insert(&self, handle: Arc<ProcessHandle>) {
        self.map().insert(handle.pid, handle);
    }

    /// Finds a process by pid or tag.
    ///
    /// # Errors
    /// [`EnvdError::NotFound`] when none matches.
    pub fn find(&self, selector: &Selector) -> Result<Arc<ProcessHandle>, EnvdError> {
        let map = self.map();
        let found = match selector {
            Selector::Pid(pid) => map.get(pid).cloned(),
            Selector::Tag(tag) => map
                .values()
                .find(|handle| handle.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        };
        found.ok_or_else(|| match selector {
            Selector::Pid(pid) => EnvdError::NotFound(format!("process with pid {pid} not found")),
            Selector::Tag(tag) => EnvdError::NotFound(format!("process with tag {tag} not found")),
        })
    }

    /// Processes still running, by pid.
    #[must_use]
    pub fn running(&self) -> Vec<Arc<ProcessHandle>> {
        let mut running: Vec<_> = self
            .map()
            .values()
            .filter(|handle| !handle.has_ended())
            .cloned()
            .collect();
        running.sort_by_key(|handle| handle.pid);
        running
    }

    /// Forgets `pid` after `retention` (its end event stays reachable until then), unless a
    /// new process took over the pid meanwhile.
    pub fn forget_later(self: &Arc<Self>, handle: &Arc<ProcessHandle>, retention: Duration) {
        let table = Arc::clone(self);
        let handle = Arc::clone(handle);
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            let mut map = table.map();
            if map
                .get(&handle.pid)
                .is_some_and(|current| Arc::ptr_eq(current, &handle))
            {
                map.remove(&handle.pid);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(limit: usize) -> ProcessHandle {
        ProcessHandle::new(7, Some("t".into()), CommandLine::default(), None, limit)
    }

    fn exit() -> Exit {
        Exit {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None,
        }
    }

    #[tokio::test]
    async fn test_late_subscriber_gets_history_then_end() {
        let process = handle(1024);
        process
            .publish(Event::Stdout(Bytes::from_static(b"a")))
            .await;
        process
            .publish(Event::Stderr(Bytes::from_static(b"b")))
            .await;
        process.finish(exit()).await;
        let subscription = process.subscribe();
        assert!(subscription.live.is_none());
        assert_eq!(
            Vec::from(subscription.replay),
            vec![
                Event::Stdout(Bytes::from_static(b"a")),
                Event::Stderr(Bytes::from_static(b"b")),
                Event::End(exit()),
            ]
        );
    }

    #[tokio::test]
    async fn test_live_subscriber_sees_each_event_once() {
        let process = Arc::new(handle(1024));
        process
            .publish(Event::Stdout(Bytes::from_static(b"old")))
            .await;
        let mut subscription = process.subscribe();
        let publisher = Arc::clone(&process);
        tokio::spawn(async move {
            publisher
                .publish(Event::Stdout(Bytes::from_static(b"new")))
                .await;
            publisher.finish(exit()).await;
        });
        let mut live = subscription.live.take().unwrap();
        assert_eq!(subscription.replay.len(), 1);
        assert_eq!(
            live.recv().await,
            Some(Event::Stdout(Bytes::from_static(b"new")))
        );
        assert_eq!(live.recv().await, Some(Event::End(exit())));
        assert_eq!(live.recv().await, None);
    }

    #[tokio::test]
    async fn test_history_is_bounded_dropping_the_oldest() {
        let process = handle(4);
        for chunk in [&b"12"[..], b"34", b"56"] {
            process
                .publish(Event::Stdout(Bytes::copy_from_slice(chunk)))
                .await;
        }
        let replay = process.subscribe().replay;
        assert_eq!(
            Vec::from(replay),
            vec![
                Event::Stdout(Bytes::from_static(b"34")),
                Event::Stdout(Bytes::from_static(b"56"))
            ]
        );
    }

    #[tokio::test]
    async fn test_table_finds_by_pid_and_tag_and_names_the_missing() {
        let table = ProcessTable::default();
        table.insert(Arc::new(handle(16)));
        assert_eq!(table.find(&Selector::Pid(7)).unwrap().pid, 7);
        assert_eq!(table.find(&Selector::Tag("t".into())).unwrap().pid, 7);
        assert_eq!(
            table.find(&Selector::Pid(8)).unwrap_err(),
            EnvdError::NotFound("process with pid 8 not found".into())
        );
    }

    #[tokio::test]
    async fn test_input_refused_once_closed() {
        let process = handle(16);
        assert!(matches!(
            process.write_input(b"x").await,
            Err(EnvdError::FailedPrecondition(_))
        ));
        assert!(process.close_input().await.is_ok());
        assert!(matches!(
            process.resize(80, 24).await,
            Err(EnvdError::FailedPrecondition(_))
        ));
    }
}
