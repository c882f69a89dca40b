//! The `batos` binary: parse the command line, run it, report failures in one line.

use clap::Parser;

fn main() -> std::process::ExitCode {
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
