//! Compiles `sensor.proto` with protox (pure Rust: no protoc to install) into prost types and
//! their proto3 JSON mapping (pbjson, proto field names kept).

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=sensor.proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(["sensor.proto"], ["."])?;
    let descriptor_path = out.join("sensor_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .build(&[".sensor.v1"])?;
    Ok(())
}
