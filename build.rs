//! Compiles proto/ into Rust with a pure-Rust protobuf compiler (protox), so a fresh machine
//! needs no system `protoc`. Also writes the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

const PROTOS: [&str; 2] = [
    "proto/webcam_streaming.proto",
    "proto/camcast/v1/camera.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("camcast_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Frame payloads become `bytes::Bytes`: one reference-counted buffer shared by all viewers.
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
