//! `process.Process`: starting, streaming, feeding, signalling and listing processes.

pub mod child;
pub mod service;
pub mod spawn;
pub mod stream;
pub mod table;
