//! coppice-envd: the in-sandbox daemon that speaks E2B's envd protocol.
//!
//! Charter: the daemon and its wire protocol; depends on no other coppice crate. [`proto`]
//! holds the `process` and `filesystem` message types and service traits, generated at build
//! time from `proto/*.proto` (written from the SDKs' field tables: same packages, services,
//! names and numbers). [`server::router`] serves them over Connect (JSON and binary), with
//! the plain routes `/health`, `/init`, `/envs`, `/metrics` and `/files`; the binary
//! `coppice-envd` runs it inside a sandbox, on the Unix socket the host holds and on TCP
//! port 49983 of the sandbox's network.
#![deny(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod filesystem;
pub mod http;
pub mod paths;
pub mod process;
pub mod rpc;
pub mod server;
pub mod state;
pub mod sys;
pub mod users;

pub use config::{ENVD_VERSION, EnvdConfig};
pub use error::EnvdError;
pub use server::{Exposure, router};
pub use state::Envd;

/// Generated Connect-RPC types and service traits (`proto::process`, `proto::filesystem`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::needless_pass_by_value,
    clippy::undocumented_unsafe_blocks
)]
pub mod proto {
    connectrpc::include_generated!();
}

#[cfg(test)]
mod tests {
    use crate::proto::filesystem::{EntryInfo, FileType};
    use crate::proto::process::process_event::{EndEvent, StartEvent};
    use crate::proto::process::{ProcessEvent, Signal};

    #[test]
    fn test_end_event_json_matches_what_the_sdks_read() {
        let event = ProcessEvent {
            event: Some(
                EndEvent {
                    exited: true,
                    status: "exit status 0".into(),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"end":{"exited":true,"status":"exit status 0"}}"#
        );
    }

    #[test]
    fn test_start_event_json_names_the_pid() {
        let event = ProcessEvent {
            event: Some(
                StartEvent {
                    pid: 42,
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"start":{"pid":42}}"#
        );
    }

    #[test]
    fn test_entry_info_json_uses_camel_case_int64_strings_and_enum_names() {
        let entry = EntryInfo {
            name: "a.txt".into(),
            r#type: FileType::FILE_TYPE_FILE.into(),
            size: 5,
            is_symlink: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"name":"a.txt","type":"FILE_TYPE_FILE","size":"5","isSymlink":true}"#
        );
    }

    #[test]
    fn test_signal_parses_from_the_sdk_request() {
        let request: crate::proto::process::SendSignalRequest =
            serde_json::from_str(r#"{"process":{"pid":42},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(
            request.signal,
            buffa::EnumValue::from(Signal::SIGNAL_SIGKILL)
        );
    }
}
