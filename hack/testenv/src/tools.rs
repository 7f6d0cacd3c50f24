//! Where the test tools live: `$ROSTER_CACHE/bin` (default `~/.cache/roster/bin`), as
//! `hack/install-test-tools.sh` leaves them.

use std::path::PathBuf;

use crate::{Error, Result};

/// The directory holding the test tools.
pub fn bin_dir() -> PathBuf {
    let cache = std::env::var_os("ROSTER_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        home.join(".cache/roster")
    });
    cache.join("bin")
}

/// The path of test tool `name`, or an error naming the script that installs it.
pub fn tool_path(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() { Ok(path) } else { Err(Error::MissingTool { name: name.to_owned(), path }) }
}
