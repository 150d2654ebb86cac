//! coppice-envd: the in-sandbox daemon that speaks E2B's envd protocol.
//!
//! Charter: the daemon and its wire protocol; depends on no other coppice crate. It arrives
//! with the envd work; until then the sandbox init runs commands over its control socket.
#![forbid(unsafe_code)]
