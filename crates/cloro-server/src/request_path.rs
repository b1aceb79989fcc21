//! Paths forwarded to the upstream must mean the same thing to the upstream
//! as to our scope check: dot-segments, backslashes and encoded `.`, `/`
//! or `\` can make them differ (path confusion), so SPEC §6 refuses them
//! before authentication.

/// Why a path is refused, for the error message.
pub(crate) fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.contains('\\') {
        return Some("the path contains a backslash");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("the path contains a `.` or `..` segment");
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"]
        .iter()
        .any(|encoded| lower.contains(encoded))
    {
        return Some("the path contains an encoded `.`, `/` or `\\`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::unsafe_path;

    #[test]
    fn confusing_paths_are_refused() {
        for path in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/..",
            "/v1\\x",
            "/v1/%2e%2e/admin",
            "/v1/a%2Fb",
            "/v1/%5c",
            "/v1/%2E",
        ] {
            assert!(unsafe_path(path).is_some(), "{path}");
        }
        for path in ["/v1/monitor", "/v1/a.b", "/v1/..x", "/v1/x..", "/v1/%20"] {
            assert!(unsafe_path(path).is_none(), "{path}");
        }
    }
}
