//! TERM/INT request shutdown (a second one exits at once); HUP asks for a reload.
//!
//! The handlers are installed first thing in `run` ([`install`]), before the
//! configuration is read: a signal that arrives during start-up waits in
//! signal-hook's pipe until the signal thread runs ([`Installed::spawn`],
//! after `run --daemon` has detached), so a SIGHUP then is a queued reload,
//! never the default action that would kill the process.

use crate::liveness;
use crate::shutdown::Shutdown;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

/// What the main thread is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Shutdown,
    Reload,
}

/// Handlers in place; signals are queued until [`Installed::spawn`].
pub struct Installed {
    signals: Signals,
}

const HANDLED: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

/// Blocks TERM, INT and HUP until [`install`]: the first thing `run` does,
/// before the allocator's re-exec. A blocked signal stays pending, through
/// an exec too, instead of taking its default action (the end of the
/// process) while no handler exists yet.
pub fn hold_until_installed() {
    set_mask(libc::SIG_BLOCK);
}

fn set_mask(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Installs the TERM, INT and HUP handlers (no thread yet: safe before a
/// fork), then lets through what [`hold_until_installed`] held: a signal
/// that came meanwhile now reaches its handler.
pub fn install() -> std::io::Result<Installed> {
    let signals = Signals::new(HANDLED)?;
    set_mask(libc::SIG_UNBLOCK);
    Ok(Installed { signals })
}

impl Installed {
    /// Starts the signal thread; requests arrive on `requests`.
    pub fn spawn(
        mut self,
        shutdown: Shutdown,
        requests: Sender<Request>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let _alive = liveness::register("signals");
                loop {
                    let arrived: Vec<i32> = liveness::waiting(|| self.signals.wait().collect());
                    for signal in arrived {
                        handle(signal, &shutdown, &requests);
                    }
                }
            })
    }
}

fn handle(signal: i32, shutdown: &Shutdown, requests: &Sender<Request>) {
    match signal {
        SIGHUP => {
            let _ = requests.send(Request::Reload);
        }
        _ if shutdown.is_triggered() => {
            log::warn!("second stop signal: exiting at once");
            std::process::exit(crate::error::code::FAILURE);
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
