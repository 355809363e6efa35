//! The small operating-system pieces: the instance lock, the state
//! directory, the open-files limit, systemd notifications, signals, detaching for `run --daemon`,
//! and the allocator's settings.

pub mod detach;
pub mod fdlimit;
pub mod lock;
pub mod malloc;
pub mod notify;
pub mod signals;
pub mod statedir;
