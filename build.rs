//! Compiles `proto/` with a pure-Rust protobuf compiler (no system `protoc`), then generates the prost
//! types and their proto3 JSON mapping (pbjson) from the same descriptors, so the two encodings share
//! one schema. pbjson's JSON code is then rewritten where it departs from the mapping (see
//! `rewrite_json_code`); every rewrite fails the build if pbjson's output no longer has the shape it
//! expects, rather than leaving a field behind.
use std::error::Error;
use std::path::PathBuf;

use prost_types::{DescriptorProto, FileDescriptorSet};

type BuildResult<T> = Result<T, Box<dyn Error>>;

fn main() -> BuildResult<()> {
    let proto = "proto/autoclaim/v1/autoclaim.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("autoclaim_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    let timestamp_fields = timestamp_fields(&descriptors);

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(descriptors)?;

    let descriptor_bytes = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".autoclaim"])?;
    let serde_file = out_dir.join("autoclaim.v1.serde.rs");
    let code = std::fs::read_to_string(&serde_file)?;
    std::fs::write(&serde_file, rewrite_json_code(&code, &timestamp_fields)?)?;
    Ok(())
}

/// The rewrites, in an order where each sees pbjson's text for the fields it is about.
fn rewrite_json_code(code: &str, timestamp_fields: &[TimestampField]) -> BuildResult<String> {
    let code = timestamps_as_the_mapping_writes_them(code, timestamp_fields)?;
    let code = read_integers_in_one_pass(&code)?;
    let code = open_enums(&code)?;
    let code = null_members_of_a_oneof_are_absent(&code)?;
    let code = null_is_the_default(&code)?;
    check_every_field_reads_null(&code)?;
    Ok(code)
}

/// `code` with every `from` replaced, failing when there is none (pbjson's output has changed).
fn replace_all(code: &str, from: &str, to: &str) -> BuildResult<String> {
    if !code.contains(from) {
        return Err(format!("{from:?} not found in pbjson's output: update build.rs").into());
    }
    Ok(code.replace(from, to))
}

/// Points the generated JSON code's integer fields at `wire::number`, whose reader takes a number or
/// a string in one pass; pbjson's tries a string first and builds an error for every plain number.
fn read_integers_in_one_pass(code: &str) -> BuildResult<String> {
    replace_all(
        code,
        "::pbjson::private::NumberDeserialize",
        "crate::wire::number::NumberDeserialize",
    )
}

/// The leading whitespace of `line`, so that rewritten lines stay readable.
fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

// ---------------------------------------------------------------- null

/// The mapping reads `null` as the field's default, for every kind of field. pbjson's readers of
/// strings, bools, integers and repeated fields refuse it; each is wrapped in an `Option` (serde_json
/// peeks for `null`, so a value costs no more to read), as `open_enums` and the Timestamp rewrite
/// do for theirs.
fn null_is_the_default(code: &str) -> BuildResult<String> {
    let code = replace_all(
        code,
        "= Some(map_.next_value()?);",
        "= Some(map_.next_value::<::std::option::Option<_>>()?.unwrap_or_default());",
    )?;
    let code = replace_all(
        &code,
        "Some(map_.next_value::<crate::wire::number::NumberDeserialize<_>>()?.0)",
        "Some(map_.next_value::<::std::option::Option<crate::wire::number::NumberDeserialize<_>>>()?\
         .map_or_else(Default::default, |n| n.0))",
    )?;
    // Message fields already are options; spelt out so that the check below sees them.
    replace_all(
        &code,
        "__ = map_.next_value()?;",
        "__ = map_.next_value::<::std::option::Option<_>>()?;",
    )
}

/// Every field reader the generated code has must be one that reads `null`: a field kind this file
/// does not handle yet (a map, repeated integers, bytes) fails the build instead of refusing `null`.
fn check_every_field_reads_null(code: &str) -> BuildResult<()> {
    const NULL_READER: &str = "map_.next_value::<::std::option::Option<";
    for (at, _) in code.match_indices("map_.next_value") {
        if !code[at..].starts_with(NULL_READER) {
            let line = code[at..].lines().next().unwrap_or_default();
            return Err(
                format!("a field reader that refuses null: {line:?}: update build.rs").into(),
            );
        }
    }
    Ok(())
}

/// In the mapping, a oneof member that is `null` is as if absent, so `{"inventory": {…},
/// "activity": null}` is an inventory record; pbjson calls the second key a second member. The
/// duplicate check moves after the read, and only a value counts.
fn null_members_of_a_oneof_are_absent(code: &str) -> BuildResult<String> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut rewritten = 0;
    let mut i = 0;
    while i < lines.len() {
        if let Some((var, variant)) = oneof_member_read(lines[i]) {
            let check: Vec<String> = out.drain(out.len().saturating_sub(3)..).collect();
            let duplicate = duplicate_check(&check, var).ok_or_else(|| {
                format!("no duplicate check before {:?}: update build.rs", lines[i])
            })?;
            if lines.get(i + 1).map(|l| l.trim()) != Some(";") {
                return Err(format!("no `;` after {:?}: update build.rs", lines[i]).into());
            }
            out.push(format!(
                "{}if let Some(v) = map_.next_value::<::std::option::Option<_>>()? {{ \
                 if {var}.is_some() {{ {duplicate} }} {var} = Some({variant}(v)); }}",
                indent(lines[i])
            ));
            rewritten += 1;
            i += 2;
        } else {
            out.push(lines[i].to_owned());
            i += 1;
        }
    }
    if rewritten == 0 {
        return Err("no oneof member found in pbjson's output: update build.rs".into());
    }
    Ok(out.join("\n") + "\n")
}

/// `(variable, variant)` of pbjson's `record__ = map_.next_value::<…Option<_>>()?.map(Variant)`.
fn oneof_member_read(line: &str) -> Option<(&str, &str)> {
    let (var, read) = line.trim().split_once(" = ")?;
    let variant = read
        .strip_prefix("map_.next_value::<::std::option::Option<_>>()?.map(")?
        .strip_suffix(')')?;
    Some((var, variant))
}

/// The `return Err(…duplicate_field…)` of pbjson's three-line check of `var`.
fn duplicate_check<'a>(lines: &'a [String], var: &str) -> Option<&'a str> {
    match lines {
        [open, ret, close]
            if open.trim() == format!("if {var}.is_some() {{")
                && ret
                    .trim()
                    .starts_with("return Err(serde::de::Error::duplicate_field(")
                && close.trim() == "}" =>
        {
            Some(ret.trim())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- enums

/// proto3 enums are open: a number the schema does not name is read, and written as a number.
/// pbjson refuses it both ways; `wire::open_enum` takes either.
fn open_enums(code: &str) -> BuildResult<String> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let (mut reads, mut writes) = (0, 0);
    let mut i = 0;
    while i < lines.len() {
        if let Some((var, enum_type)) = enum_read(lines[i]) {
            out.push(format!(
                "{}{var} = Some(map_.next_value::<::std::option::Option<\
                 crate::wire::open_enum::OpenEnum<{enum_type}>>>()?.map_or(0, |e| e.number));",
                indent(lines[i])
            ));
            reads += 1;
            i += 1;
        } else if let Some(write) = enum_write(&lines[i..]) {
            out.push(write);
            writes += 1;
            i += 3;
        } else {
            out.push(lines[i].to_owned());
            i += 1;
        }
    }
    if reads == 0 || writes == 0 {
        return Err("no enum field found in pbjson's output: update build.rs".into());
    }
    let code = out.join("\n") + "\n";
    if code.contains("Invalid variant") {
        return Err("an enum writer that refuses unknown numbers is left: update build.rs".into());
    }
    Ok(code)
}

/// `(variable, enum type)` of pbjson's `kind__ = Some(map_.next_value::<ActivityKind>()? as i32);`.
fn enum_read(line: &str) -> Option<(&str, &str)> {
    let (var, read) = line.trim().split_once(" = ")?;
    let enum_type = read
        .strip_prefix("Some(map_.next_value::<")?
        .strip_suffix(">()? as i32);")?;
    Some((var, enum_type))
}

/// The one-line replacement of pbjson's three-line writer of an enum field:
/// `let v = E::try_from(self.f)`, `.map_err(… "Invalid variant" …)?;`, `serialize_field("f", &v)?;`.
fn enum_write(lines: &[&str]) -> Option<String> {
    let [first, second, third, ..] = lines else {
        return None;
    };
    let (enum_type, field) = first
        .trim()
        .strip_prefix("let v = ")?
        .strip_suffix(')')?
        .split_once("::try_from(")?;
    if !second.contains("Invalid variant") {
        return None;
    }
    let name = third
        .trim()
        .strip_prefix("struct_ser.serialize_field(")?
        .strip_suffix(", &v)?;")?;
    Some(format!(
        "{}struct_ser.serialize_field({name}, \
         &crate::wire::open_enum::OpenEnum::<{enum_type}>::new({field}))?;",
        indent(third)
    ))
}

// ---------------------------------------------------------------- timestamps

/// A `google.protobuf.Timestamp` field: where pbjson-types' writer and reader are replaced by
/// `wire::timestamp`'s, which follow the mapping (Z-normalised output, years 0001-9999).
struct TimestampField {
    /// Full name of the message, e.g. `autoclaim.v1.ActivityEvent`.
    message: String,
    /// The field's Rust (and proto) name, e.g. `occurred_at`.
    name: String,
    /// The field's JSON name, e.g. `occurredAt`.
    json_name: String,
}

fn timestamp_fields(descriptors: &FileDescriptorSet) -> Vec<TimestampField> {
    let mut fields = Vec::new();
    for file in &descriptors.file {
        if file.package().starts_with("autoclaim") {
            for message in &file.message_type {
                collect_timestamp_fields(file.package(), message, &mut fields);
            }
        }
    }
    fields
}

fn collect_timestamp_fields(scope: &str, message: &DescriptorProto, out: &mut Vec<TimestampField>) {
    let full_name = format!("{scope}.{}", message.name());
    for field in &message.field {
        if field.type_name() == ".google.protobuf.Timestamp" {
            out.push(TimestampField {
                message: full_name.clone(),
                name: field.name().to_owned(),
                json_name: field.json_name().to_owned(),
            });
        }
    }
    for nested in &message.nested_type {
        collect_timestamp_fields(&full_name, nested, out);
    }
}

/// Rewrites each Timestamp field's writer and reader within the impls of its message (pbjson writes
/// one `impl` per trait and type, starting at the beginning of a line).
fn timestamps_as_the_mapping_writes_them(
    code: &str,
    fields: &[TimestampField],
) -> BuildResult<String> {
    let mut out = String::with_capacity(code.len() + fields.len() * 128);
    let mut rewritten = vec![0; fields.len()];
    for chunk in impls(code) {
        let mut chunk = chunk.to_owned();
        if let Some(message) = impl_message(&chunk).map(str::to_owned) {
            for (field, count) in fields.iter().zip(&mut rewritten) {
                if field.message == message {
                    *count += rewrite_timestamp_field(&mut chunk, field);
                }
            }
        }
        out.push_str(&chunk);
    }
    for (field, count) in fields.iter().zip(rewritten) {
        if count != 2 {
            return Err(format!(
                "{}.{}: found {count} of its JSON writer and reader, not 2: update build.rs",
                field.message, field.name
            )
            .into());
        }
    }
    Ok(out)
}

/// The file cut before each line that starts an `impl`.
fn impls(code: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = code.match_indices("\nimpl").map(|(i, _)| i + 1).collect();
    starts.insert(0, 0);
    starts.push(code.len());
    starts.windows(2).map(|w| &code[w[0]..w[1]]).collect()
}

/// The message a Serialize or Deserialize impl is for, from the full name pbjson passes to serde.
fn impl_message(chunk: &str) -> Option<&str> {
    let marker = ["serialize_struct(\"", "deserialize_struct(\""]
        .iter()
        .find_map(|m| chunk.find(m).map(|at| at + m.len()))?;
    let rest = &chunk[marker..];
    rest.find('"').map(|end| &rest[..end])
}

/// How many of the field's writer and reader were in `chunk` (each at most once).
fn rewrite_timestamp_field(chunk: &mut String, field: &TimestampField) -> usize {
    let json = &field.json_name;
    let name = &field.name;
    let rewrites = [
        (
            format!("struct_ser.serialize_field(\"{json}\", v)?;"),
            format!(
                "struct_ser.serialize_field(\"{json}\", &crate::wire::timestamp::ProtoJson(*v))?;"
            ),
        ),
        (
            format!("{name}__ = map_.next_value()?;"),
            format!(
                "{name}__ = map_.next_value::<::std::option::Option<\
                 crate::wire::timestamp::ProtoJson>>()?.map(|t| t.0);"
            ),
        ),
    ];
    let mut count = 0;
    for (from, to) in rewrites {
        let found = chunk.matches(&from).count();
        if found == 1 {
            *chunk = chunk.replace(&from, &to);
        }
        count += found;
    }
    count
}
