//! Compiles `proto/` with a pure-Rust protobuf compiler (no system `protoc`), then generates the prost
//! types and their proto3 JSON mapping (pbjson) from the same descriptors, so the two encodings share
//! one schema.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/autoclaim/v1/autoclaim.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("autoclaim_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(descriptors)?;

    let descriptor_bytes = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".autoclaim"])?;
    read_integers_in_one_pass(&out_dir.join("autoclaim.v1.serde.rs"))?;
    Ok(())
}

/// Points the generated JSON code's integer fields at `wire::number`, whose reader takes a number or
/// a string in one pass; pbjson's tries a string first and builds an error for every plain number.
fn read_integers_in_one_pass(
    serde_file: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    const PBJSON_READER: &str = "::pbjson::private::NumberDeserialize";
    const OUR_READER: &str = "crate::wire::number::NumberDeserialize";
    let code = std::fs::read_to_string(serde_file)?;
    if !code.contains(PBJSON_READER) {
        return Err(
            format!("{PBJSON_READER} not found in pbjson's output: update build.rs").into(),
        );
    }
    std::fs::write(serde_file, code.replace(PBJSON_READER, OUR_READER))?;
    Ok(())
}
