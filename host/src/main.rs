//! The `batos` binary: parse the command line, run it, report failures in one line.

use clap::Parser;

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

fn main() -> std::process::ExitCode {
    set_mind_threads();
    let cli = batos::cli::Cli::parse();
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
