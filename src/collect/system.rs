//! Uptime from /proc/uptime and the boot id from
//! /proc/sys/kernel/random/boot_id.

use super::invalid;
use std::io;

/// Whole seconds since boot (the first field, rounded down).
pub fn parse_uptime(text: &str) -> io::Result<u64> {
    let first = text.split_ascii_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs.floor() as u64),
        _ => Err(invalid(format!("bad uptime {text:?}"))),
    }
}

/// The boot id: a UUID the kernel makes at each boot.
pub fn parse_boot_id(text: &str) -> io::Result<String> {
    let id = text.trim();
    let looks_like_uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if looks_like_uuid {
        Ok(id.to_string())
    } else {
        Err(invalid(format!("bad boot id {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_rounds_down() {
        assert_eq!(parse_uptime("3785.97 6850.77\n").unwrap(), 3785);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 0").is_err());
    }

    #[test]
    fn boot_id() {
        assert_eq!(
            parse_boot_id("f99c11d0-58bc-4b3e-b5a7-f874daa5d90a\n").unwrap(),
            "f99c11d0-58bc-4b3e-b5a7-f874daa5d90a"
        );
        assert!(parse_boot_id("not a uuid\n").is_err());
    }
}
