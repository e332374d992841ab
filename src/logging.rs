//! How every command and tool of the project logs: to stderr, filtered by AUTOCLAIM_LOG (else a
//! level the command chooses), in colour only on a terminal and never with NO_COLOR set
//! (https://no-color.org).
use std::io;

/// Installs the global subscriber; `json` logs one JSON object a line.
pub fn init(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOCLAIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = use_colour(
        std::env::var_os("NO_COLOR"),
        std::io::IsTerminal::is_terminal(&io::stderr()),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour only on a terminal, and not when NO_COLOR is set to anything but the empty string.
fn use_colour(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colour_off_even_on_a_terminal() {
        assert!(use_colour(None, true));
        assert!(!use_colour(None, false));
        assert!(!use_colour(Some("1".into()), true));
        assert!(
            use_colour(Some("".into()), true),
            "an empty NO_COLOR is unset"
        );
    }
}
