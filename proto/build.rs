//! Compiles the `sensor.v1` schema (`sensor.proto`, `alert.proto`, `service.proto`) with protox
//! (pure Rust: no protoc to install) into prost types, tonic client and server stubs for the
//! `Sensor` service, and the proto3 JSON mapping of every message (pbjson, proto field names kept).

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: [&str; 3] = ["sensor.proto", "alert.proto", "service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out.join("sensor_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    // Labels in a stable (sorted) order, in JSON as in Rust.
    let btree = [".sensor.v1.Container", ".sensor.v1.Pod"];
    let mut config = prost_build::Config::new();
    config
        .btree_map(btree)
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .btree_map(btree)
        .build(&[".sensor.v1"])?;
    Ok(())
}
