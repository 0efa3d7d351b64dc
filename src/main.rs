//! The `sft-search` binary: parse the arguments, run the library, print the error chain.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sft_search::cli::Cli::parse();
    sft_search::app::main(cli)
}
