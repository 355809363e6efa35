//! Who this host is: machine_id, boot_id, node_id (SPEC §3.1).

use std::path::Path;
use uuid::Uuid;

const MACHINE_ID_FILE: &str = "machine-id";

/// `/etc/machine-id` (32 hex digits) as a hyphenated UUID.
pub fn parse_machine_id(text: &str) -> Option<String> {
    let hex = text.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Uuid::parse_str(hex)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The machine id: /etc/machine-id, else a UUID kept in `state_dir`
/// (created there when `persist` is set, made up for this run otherwise).
pub fn machine_id(etc_machine_id: &Path, state_dir: &Path, persist: bool) -> String {
    if let Some(id) = std::fs::read_to_string(etc_machine_id)
        .ok()
        .and_then(|t| parse_machine_id(&t))
    {
        return id;
    }
    let kept = state_dir.join(MACHINE_ID_FILE);
    if let Some(id) = std::fs::read_to_string(&kept)
        .ok()
        .and_then(|t| Uuid::parse_str(t.trim()).ok())
    {
        return id.hyphenated().to_string();
    }
    let id = Uuid::new_v4().hyphenated().to_string();
    if persist {
        if let Err(e) = std::fs::write(&kept, format!("{id}\n")) {
            log::warn!("cannot keep machine id in {}: {e}", kept.display());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_becomes_a_uuid() {
        assert_eq!(
            parse_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap(),
            "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4"
        );
        assert!(parse_machine_id("not-an-id").is_none());
        assert!(parse_machine_id("").is_none());
    }

    #[test]
    fn fallback_id_is_kept_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-machine-id");
        let first = machine_id(&missing, dir.path(), true);
        let second = machine_id(&missing, dir.path(), true);
        assert_eq!(first, second);
        assert!(Uuid::parse_str(&first).is_ok());
    }
}
