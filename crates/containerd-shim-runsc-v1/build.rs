//! Compiles the protocol definitions in `proto/` and embeds the git revision for `-v`.
fn main() {
    compile_protos();
    embed_revision();
}

/// `proto/` (see its README): prost messages in `$OUT_DIR`, included by `src/options.rs`.
fn compile_protos() {
    let protos = [
        "../../proto/runtimeoptions/v1/api.proto",
        "../../proto/runctypes/runc.proto",
    ];
    if let Err(e) = prost_build::compile_protos(&protos, &["../../proto"]) {
        // Cargo shows build script output only on failure: say what is missing.
        panic!("compiling {protos:?} failed (protoc comes with Debian's protobuf-compiler): {e}");
    }
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn embed_revision() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let rev = if dirty && rev != "unknown" {
        format!("{rev}-dirty")
    } else {
        rev
    };
    println!("cargo:rustc-env=SHIM_GIT_REVISION={rev}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/index");
}
