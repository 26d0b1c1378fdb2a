//! The Go bench reader (`go-client/cmd/shmcast-bench-reader`): found or built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// The Go bench reader binary (`go-client/cmd/shmcast-bench-reader`), built into a temporary
/// directory unless given with `--go-reader`. It speaks the harness's peer protocol
/// (`shmcast-bench-reader SPEC`, [`crate::spec`]) for the `consume` and `timestamp` roles over
/// shm.
pub struct GoReader {
    path: PathBuf,
    built_in: Option<PathBuf>,
}

impl GoReader {
    /// `explicit`, or a fresh `go build` of the reader found in `./go-client` or in the
    /// source tree this harness was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<GoReader> {
        if let Some(path) = explicit {
            if !path.is_file() {
                return Err(format!("--go-reader {}: no such file", path.display()).into());
            }
            return Ok(GoReader {
                path: path.to_path_buf(),
                built_in: None,
            });
        }
        let candidates = [
            PathBuf::from("go-client"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../go-client"),
        ];
        let Some(dir) = candidates
            .iter()
            .find(|d| d.join("cmd/shmcast-bench-reader").is_dir())
        else {
            return Err(format!(
                "--consumer go: the Go bench reader (go-client/cmd/shmcast-bench-reader) was not \
                 found in {} or {}; build it and pass --go-reader PATH",
                candidates[0].display(),
                candidates[1].display()
            )
            .into());
        };
        let tmp = std::env::temp_dir().join(format!("shmcast-bench-go-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let reader = GoReader {
            path: tmp.join("shmcast-bench-reader"),
            built_in: Some(tmp),
        };
        let output = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&reader.path)
            .arg("./cmd/shmcast-bench-reader")
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "--consumer go: cannot run `go build` in {} ({e}); install Go or pass \
                     --go-reader PATH",
                    dir.display()
                )
            })?;
        if !output.status.success() {
            return Err(format!(
                "--consumer go: `go build ./cmd/shmcast-bench-reader` in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(reader)
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for GoReader {
    fn drop(&mut self) {
        if let Some(dir) = &self.built_in {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
