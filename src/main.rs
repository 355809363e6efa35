//! The `metricsd` binary: parse the command line, run, turn errors into exit codes.

use clap::Parser;
use metricsd::app;
use metricsd::cli::{Cli, Command, RunArgs};
use metricsd::error::code;

fn main() {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    if matches!(cli.command, None | Some(Command::Run(_))) {
        // An allocator setting, not a trick on pages: a few threads with
        // little to allocate need one malloc arena, not one per thread.
        // SAFETY: mallopt only tunes the allocator; called before any thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        // Blocks of 32 KiB and more get a mapping of their own, which goes
        // back to the kernel when they are freed. These are short-lived
        // buffers: the inflate state of each queued row a poster decodes
        // (~47 KiB), the deflate state of each snapshot's model (~380 KiB),
        // JSON buffers. Carved from the heap instead (glibc's default
        // threshold is 128 KiB, and it rises to the largest block freed so
        // far), they leave holes between the threads' long-lived blocks that
        // stay resident. Setting it also stops that rise.
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024) };
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
            let prefix = if std::env::var_os("JOURNAL_STREAM").is_some() {
                "<3>"
            } else {
                ""
            };
            eprintln!("{prefix}metricsd: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
