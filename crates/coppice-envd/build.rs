//! Generates the envd message types and service traits from `proto/`, with a pure-Rust proto
//! compiler (no `protoc` on the build machine).

use std::error::Error;
use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 2] = ["process.proto", "filesystem.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let descriptor_set = out_dir.join("envd.fds.bin");
    std::fs::write(&descriptor_set, descriptors.encode_to_vec())?;
    connectrpc_build::Config::new()
        .descriptor_set(&descriptor_set)
        .files(&PROTOS)
        .include_file("_connectrpc.rs")
        .compile()?;
    Ok(())
}
