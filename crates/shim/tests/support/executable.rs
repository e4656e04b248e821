//! Writing a script that a test then runs (the fake runsc), shared by the test crates.

use std::path::Path;

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
        .status()
        .unwrap();
    assert!(status.success(), "install {}: {status}", path.display());
}
