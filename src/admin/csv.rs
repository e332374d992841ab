//! CSV as the admin API and `autoclaim report` write it: RFC 4180 with CRLF line ends, and fields a
//! spreadsheet would read as a formula guarded with a leading `'` (OWASP's advice against CSV
//! injection).

/// Appends one field: quoted when needed, guarded when it looks like a formula.
pub fn field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends one line of fields.
pub fn line<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f.as_ref());
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_guards_formulas() {
        let mut out = String::new();
        field(&mut out, "a,\"b\"");
        assert_eq!(out, "\"a,\"\"b\"\"\"");
        let mut out = String::new();
        field(&mut out, "=HYPERLINK(1)");
        assert_eq!(out, "'=HYPERLINK(1)");
        let mut out = String::new();
        line(&mut out, &["x", "-1", "a\nb"]);
        assert_eq!(out, "x,'-1,\"a\nb\"\r\n");
    }
}
