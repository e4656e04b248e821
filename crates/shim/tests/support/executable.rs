//! Writing a script that a test then runs (the fake runsc), shared by the test crates.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `ECHILD` on Linux (the test crates sharing this file do not all depend on `nix`).
const ECHILD: i32 = 10;

/// Writes `text` to `path` as an executable, without this process ever holding a writable
/// descriptor to `path`: another test thread forking meanwhile would inherit such a
/// descriptor until its exec, and running the script in that window fails with ETXTBSY
/// ("Text file busy"). `install` writes it in a process of its own.
pub fn write_executable(path: &Path, text: &str) {
    let source = path.with_extension("source");
    std::fs::write(&source, text).unwrap();
    let status = std::process::Command::new("install")
        .args(["-m", "0755"])
        .arg(&source)
        .arg(path)
        .status();
    match status {
        Ok(status) => assert!(status.success(), "install {}: {status}", path.display()),
        // A test with the shim's subreaper running may reap `install` first: it has exited,
        // and what it wrote is checked below.
        Err(e) if e.raw_os_error() == Some(ECHILD) => {}
        Err(e) => panic!("install {}: {e}", path.display()),
    }
    assert_eq!(std::fs::read_to_string(path).unwrap(), text);
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "mode of {}", path.display());
}
