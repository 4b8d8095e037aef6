//! The `tether` binary: parse the command line, load and validate the config before
//! binding any port, build the app, run it. Everything else lives in the crates.

mod app;
mod cli;
mod demo;
mod keys;
mod logging;
mod perms;
mod reload;
mod sessions;
mod source;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: relaying allocates and frees a packet-sized
/// buffer per SSH packet on many threads, and glibc trims each thread's arena back
/// to the kernel (`madvise`) only to fault the pages in again for the next packet —
/// a tenth of the relay's CPU in the throughput benchmark's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
