//! The `metricsd` binary: parse the command line, run, turn errors into exit codes.

use clap::Parser;
use metricsd::app;
use metricsd::cli::{Cli, Command, RunArgs};
use metricsd::error::code;

fn main() {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    if matches!(cli.command, None | Some(Command::Run(_))) {
        metricsd::os::signals::hold_until_installed();
        metricsd::fault::point("start");
        metricsd::os::malloc::reexec_without_thread_caches();
        metricsd::os::malloc::tune();
    } else {
        // One-shot commands behave like other CLI tools when piped into `head`.
        // SAFETY: restoring the default disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => app::run(config, &args).map(|()| code::OK),
        Command::Once { flat } => app::once(config, flat).map(|()| code::OK),
        Command::CheckConfig => app::check_config(config).map(|()| code::OK),
        Command::Queue(command) => app::queue(config, &command),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Under journald the priority prefix keeps the error filterable.
            let prefix = if metricsd::logging::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            eprintln!("{prefix}metricsd: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
