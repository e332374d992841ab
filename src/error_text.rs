//! How a command prints an error that stops it: the error and its causes on one line.

/// The error and its causes, each said once: many errors already name their source in their own
/// message, which printing the whole chain (anyhow's `{:#}`) would repeat.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        let cause = io::Error::other("connection refused");
        let error =
            anyhow::Error::new(cause).context("cannot reach the broker: connection refused");
        assert_eq!(
            error_text(error.as_ref()),
            "cannot reach the broker: connection refused"
        );
        let error = anyhow::Error::new(io::Error::other("connection refused")).context("restoring");
        assert_eq!(error_text(error.as_ref()), "restoring: connection refused");
    }
}
