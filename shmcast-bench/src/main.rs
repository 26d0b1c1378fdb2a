//! `shmcast-bench`: the shmcast benchmark harness (docs/CLI.md, "shmcast-bench"). With
//! `peer SPEC` as its arguments it is the other process of one measurement instead.

use std::process::ExitCode;

use clap::Parser;
use shmcast_bench::{measure, run, spec::PeerSpec, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        // Started by the harness, never by people: no flags, one JSON specification.
        Some("peer") => peer(&args[2..]),
        _ => run::run(run::BenchArgs::parse()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmcast-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn peer(args: &[String]) -> Result<()> {
    let [spec] = args else {
        return Err("usage: shmcast-bench peer SPEC (one JSON object; see spec.rs)".into());
    };
    let spec: PeerSpec =
        serde_json::from_str(spec).map_err(|e| format!("peer: bad specification {spec:?}: {e}"))?;
    measure::serve(&spec)
}
