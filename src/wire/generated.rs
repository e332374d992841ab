//! Types generated from `proto/autoclaim/v1` by prost, with their proto3 JSON mapping from pbjson.
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/autoclaim.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/autoclaim.v1.serde.rs"));
