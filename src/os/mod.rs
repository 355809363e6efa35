//! The small operating-system pieces: the instance lock, the state
//! directory, systemd notifications, signals, and detaching for `run --daemon`.

pub mod detach;
pub mod lock;
pub mod notify;
pub mod signals;
pub mod statedir;
