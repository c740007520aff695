//! Who an SSH login names and proves: `alice` or `alice+web-01`, shown
//! safely in audit records, and matched against the configured keys.

use russh::keys::PublicKey;

use crate::config::is_valid_name;

/// `alice` reaches the control plane; `alice+web-01` the resource web-01.
pub fn split_username(name: &str) -> Option<(&str, Option<&str>)> {
    let (user, target) = match name.split_once('+') {
        Some((user, target)) => (user, Some(target)),
        None => (name, None),
    };
    (is_valid_name(user) && target.is_none_or(is_valid_name)).then_some((user, target))
}

/// Usernames come from the network: keep audit records short and printable.
pub fn printable(name: &str) -> String {
    crate::audit::printable(name, 64)
}

pub fn key_matches(key: &PublicKey, configured: &[String]) -> bool {
    let Ok(text) = key.to_openssh() else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    configured
        .iter()
        .any(|k| k.split_once(' ') == Some((kind, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_route_to_control_or_a_resource() {
        assert_eq!(split_username("alice"), Some(("alice", None)));
        assert_eq!(
            split_username("alice+web-01"),
            Some(("alice", Some("web-01")))
        );
        assert_eq!(split_username("alice+"), None);
        assert_eq!(split_username("+web-01"), None);
        assert_eq!(split_username("al ice"), None);
        assert_eq!(split_username("a+b+c"), None);
    }

    #[test]
    fn printable_strips_control_characters_and_caps_length() {
        assert_eq!(printable("ev\u{1b}[2Jil"), "ev[2Jil");
        assert_eq!(printable(&"x".repeat(500)).len(), 64);
    }
}
