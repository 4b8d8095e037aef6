//! The `tether` binary: parse the command line, load and validate the config before
//! binding any port, build the app, run it. Everything else lives in the crates.

mod app;
mod cli;
mod demo;
mod keys;
mod reload;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
