//! TERM/INT request shutdown (a second one exits at once); HUP asks for a reload.

use crate::shutdown::Shutdown;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::mpsc::Sender;

/// What the main thread is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Shutdown,
    Reload,
}

/// Starts the signal thread; requests arrive on `requests`.
pub fn spawn(shutdown: Shutdown, requests: Sender<Request>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        let _ = requests.send(Request::Reload);
                    }
                    _ if shutdown.is_triggered() => {
                        log::warn!("second stop signal: exiting at once");
                        std::process::exit(1);
                    }
                    _ => {
                        let name = if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        };
                        log::info!("{name} received: stopping");
                        shutdown.trigger();
                        let _ = requests.send(Request::Shutdown);
                    }
                }
            }
        })?;
    Ok(())
}
