//! The `batos` binary: parse the command line, run it, report failures in one line.

use clap::Parser;

/// mimalloc, not glibc's malloc: a worker's megabyte-sized transients (a large slot read, its
/// reply) otherwise stay in that thread's heap, several tens of MB per worker.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// candle sizes its quantized-matmul pool from `CANDLE_NUM_THREADS` once, at first use, and
/// offers no other knob; it gets the same count as the native backend ([`batos::mind::threads`]).
#[allow(unsafe_code)]
fn set_mind_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return;
    }
    let threads = batos::mind::threads().to_string();
    // SAFETY: the first thing main does, before any other thread exists, so nothing can read
    // the environment while it changes.
    unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads) };
}

/// mimalloc reads its options from the environment once, as the process starts: a host (the
/// long-lived process) runs itself again with freed pages going back to the system at once
/// (`purge_delay` 0) rather than after a delay that an idle worker never reaches, so its RSS
/// follows what it holds. Other commands are short-lived and keep the default.
fn reexec_host_with_allocator_options(cli: &batos::cli::Cli) {
    use std::os::unix::process::CommandExt;
    if !matches!(cli.command, batos::cli::Command::Serve { .. })
        || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
    {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(me)
        .args(std::env::args_os().skip(1))
        .env("MIMALLOC_PURGE_DELAY", "0")
        .exec();
    eprintln!("batos: serving with the allocator's defaults (could not run again: {error})");
}

fn main() -> std::process::ExitCode {
    set_mind_threads();
    let cli = batos::cli::Cli::parse();
    reexec_host_with_allocator_options(&cli);
    batos::cli::init_log(cli.global.log_format);
    let json = cli.global.json;
    match batos::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                println!("{}", failure.to_json());
            }
            eprintln!("batos: {}: {}", failure.code, failure.message);
            std::process::ExitCode::FAILURE
        }
    }
}
