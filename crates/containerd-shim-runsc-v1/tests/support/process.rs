//! The shim's processes, found through `/proc`: by their argv (the shim's flags name its
//! socket and containerd) and by their session (the shim starts one; runsc's processes,
//! here the fake's, stay in it).

/// The live (not zombie) processes serving `address`: `-socket <address>` in their argv.
pub fn daemons(address: &str) -> Vec<i32> {
    let needle = format!("\0-socket\0{address}\0");
    processes().filter(|&pid| argv_has(pid, &needle)).collect()
}

/// Whether the argv of process `pid` (a zombie has none) contains `needle`.
pub fn argv_has(pid: i32, needle: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The value of `-socket` in the argv of process `pid`.
pub fn socket_arg(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    args.find(|a| *a == b"-socket")?;
    String::from_utf8(args.next()?.to_vec()).ok()
}

/// Every process id.
pub fn processes() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// The session of process `pid`, if it lives.
pub fn session(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp session ...: comm may hold anything but not end in ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(3)?.parse().ok()
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
