//! The `batos` binary: parse the command line, run it, report failures in one line.

use clap::Parser;

/// The inference thread count when neither `BATOS_MIND_THREADS` nor `CANDLE_NUM_THREADS` says:
/// one thread keeps its speed when another process holds the other core; two do not.
const DEFAULT_MIND_THREADS: &str = "1";

/// candle sizes its quantized-matmul pool from `CANDLE_NUM_THREADS` once, at first use, and
/// offers no other knob; `BATOS_MIND_THREADS` (default 1) sets it.
#[allow(unsafe_code)]
fn set_mind_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return;
    }
    let threads = std::env::var("BATOS_MIND_THREADS")
        .ok()
        .filter(|n| n.parse::<usize>().is_ok_and(|n| n > 0))
        .unwrap_or_else(|| DEFAULT_MIND_THREADS.to_owned());
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
