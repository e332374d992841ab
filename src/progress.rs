//! A count that long commands (`loadgen`, `publish`, `verify`) keep up to date on stderr, so a person
//! at a terminal sees that they are working. Only on a terminal: in a pipe or a log the line would be
//! noise, and the commands print their totals when they finish anyway.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(250);

pub struct Progress<W: Write> {
    out: Option<W>,
    label: String,
    count: u64,
    drawn_at: Option<Instant>,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr if it is a terminal, else nothing.
    pub fn on_stderr(label: impl Into<String>) -> Self {
        let stderr = std::io::stderr();
        let out = stderr.is_terminal().then_some(stderr);
        Progress::to(out, label)
    }
}

impl<W: Write> Progress<W> {
    pub fn to(out: Option<W>, label: impl Into<String>) -> Self {
        Progress {
            out,
            label: label.into(),
            count: 0,
            drawn_at: None,
        }
    }

    /// Counts `n` more and redraws the line if it is due.
    pub fn add(&mut self, n: u64) {
        self.count += n;
        let due = self.drawn_at.is_none_or(|at| at.elapsed() >= REDRAW);
        if due {
            self.draw();
        }
    }

    /// Leaves the final count on its own line.
    pub fn finish(&mut self) {
        if self.drawn_at.is_some() {
            self.draw();
            if let Some(out) = &mut self.out {
                let _ = writeln!(out);
            }
        }
        self.drawn_at = None;
    }

    fn draw(&mut self) {
        if let Some(out) = &mut self.out {
            // Carriage return and erase-line: redraw in place.
            let _ = write!(out, "\r\x1b[2K{}: {}", self.label, self.count);
            let _ = out.flush();
            self.drawn_at = Some(Instant::now());
        }
    }
}

impl<W: Write> Drop for Progress<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_in_place_and_ends_with_the_total() {
        let mut buffer = Vec::new();
        {
            let mut progress = Progress::to(Some(&mut buffer), "published");
            for _ in 0..1000 {
                progress.add(1);
            }
        }
        let text = String::from_utf8(buffer).unwrap();
        assert!(text.starts_with("\r\x1b[2Kpublished: 1"), "{text:?}");
        assert!(text.ends_with("published: 1000\n"), "{text:?}");
    }
}
