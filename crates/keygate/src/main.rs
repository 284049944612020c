//! The `keygate` command: servers (`serve`, `hub`, `provider`, `gateway`), the
//! user's key and sign-in (`id`, `login`, `account`, `mfa`, `token verify`), and
//! administration (`keys`, `sessions`). It parses, sets up logging and dispatches
//! to [`cli`], whose modules build configuration and call into the library.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    // RUST_LOG with the caps that keep frame and header contents out of the log.
    keygate::logging::init();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
