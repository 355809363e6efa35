//! The binary's one error type: every failure that ends a command carries
//! the exit code of SPEC §1 with it.

/// Exit codes of SPEC §1, named once.
pub mod code {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CANT_CREATE: i32 = 73;
    pub const CONFIG: i32 = 78;
}

/// A failure that ends the process; the message is printed after "metricsd: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad file, unknown key, bad value (78).
    #[error("{0}")]
    Config(String),
    /// The state directory or the queue cannot be created or opened (73).
    #[error("{0}")]
    State(String),
    /// Anything else: the lock is held, the address is in use, ... (1).
    #[error("{0}")]
    Failure(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => code::CONFIG,
            Error::State(_) => code::CANT_CREATE,
            Error::Failure(_) => code::FAILURE,
        }
    }

    /// The error for `exit_code` (as reported across the `run --daemon` pipe).
    pub fn from_exit_code(exit_code: i32, message: String) -> Error {
        match exit_code {
            code::CONFIG => Error::Config(message),
            code::CANT_CREATE => Error::State(message),
            _ => Error::Failure(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_exit_code_and_round_trips() {
        for (e, c) in [
            (Error::Config("c".into()), 78),
            (Error::State("s".into()), 73),
            (Error::Failure("f".into()), 1),
        ] {
            assert_eq!(e.exit_code(), c);
            assert_eq!(Error::from_exit_code(c, e.to_string()), e);
        }
    }
}
