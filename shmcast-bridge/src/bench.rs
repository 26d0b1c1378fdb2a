//! `shmcast-bridge bench` (filled in below).
use clap::Args;
use std::process::ExitCode;

/// Options of the bench.
#[derive(Args, Debug)]
pub struct BenchArgs {}

/// Runs the bench.
pub async fn run(_args: BenchArgs) -> ExitCode {
    ExitCode::SUCCESS
}
