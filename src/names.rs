//! Validation of names that end up in file paths or Kubernetes object names.
//!
//! A secret name becomes a file name under the mount path, so it must never
//! contain `/` or `..`: names are [RFC 1123 DNS labels], which rules out both.
//!
//! [RFC 1123 DNS labels]: https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-label-names

/// The longest DNS label.
pub const MAX_LABEL: usize = 63;

/// Why a name is not a DNS label; the message is meant to follow "name `x`: ".
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.contains("..") {
        return Some("contains '..': names may not leave the mount".into());
    }
    if name.contains('/') {
        return Some("contains '/': names are file names in the mount, not paths".into());
    }
    if name.len() > MAX_LABEL {
        return Some(format!("is {} characters long, the limit is {MAX_LABEL}", name.len()));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some("may contain only lowercase letters, digits and '-' (a DNS label)".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must start and end with a letter or digit (a DNS label)".into());
    }
    None
}

/// The longest file name.
pub const MAX_FILE_NAME: usize = 253;

/// Why a name cannot be a file name in the mount; the message is meant to
/// follow "name `x`: ". Letters (either case), digits, `.`, `_` and `-`,
/// not starting with `.` (the atomic writer's own entries do) — so never
/// `/`, `..` or a hidden file.
pub fn file_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.contains('/') {
        return Some("contains '/': names are file names in the mount, not paths".into());
    }
    if name.starts_with('.') {
        return Some("starts with '.': names may not leave the mount or hide in it".into());
    }
    if name.len() > MAX_FILE_NAME {
        return Some(format!("is {} characters long, the limit is {MAX_FILE_NAME}", name.len()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Some("may contain only letters, digits, '.', '_' and '-'".into());
    }
    None
}

/// Whether `name` is a valid environment variable name for the purposes of a
/// `_FILE` companion (C identifier rules; Kubernetes itself is laxer).
pub fn is_c_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "db-password", "x1", "a-b-c", &"a".repeat(63)] {
            assert_eq!(dns_label_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn rejects_paths_traversal_and_bad_characters() {
        for bad in ["", "certs/tls-key", "../../etc/passwd", "..", "A", "a_b", "-a", "a-", "tls.key", &"a".repeat(64)] {
            assert!(dns_label_problem(bad).is_some(), "{bad}");
        }
        assert!(dns_label_problem("../x").unwrap().contains(".."));
        assert!(dns_label_problem("a/b").unwrap().contains('/'));
        assert!(dns_label_problem("a..b").unwrap().contains(".."));
    }

    #[test]
    fn file_names_allow_dots_and_case_but_never_leave_the_mount() {
        for ok in ["a", "db-password", "config.json", "App_Config.properties", "a..b", &"a".repeat(253)] {
            assert_eq!(file_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "..", ".", "../x", "a/b", "..data", ".hidden", "a b", "a\\b", "\u{e9}", &"a".repeat(254)] {
            assert!(file_name_problem(bad).is_some(), "{bad}");
        }
    }
}
