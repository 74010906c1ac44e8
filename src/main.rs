use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    wardgate::cli::main(wardgate::cli::Cli::parse())
}
