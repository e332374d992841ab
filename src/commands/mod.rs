//! One module per command of the binary: its flags and what it does. `main.rs` only dispatches.
pub mod create_topics;
pub mod demo;
pub mod loadgen;
pub mod publish;
pub mod replay;
pub mod service;

use std::fs::File;
use std::io::{self, BufRead, BufReader};

use anyhow::Context;

/// The lines of a file, or of standard input for `-`.
fn input_lines(input: &str) -> anyhow::Result<Box<dyn BufRead>> {
    if input == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(input).with_context(|| format!("cannot open {input}"))?;
    Ok(Box::new(BufReader::new(file)))
}
