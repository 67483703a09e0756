//! Sets `AEGIS_COMMIT` to the git commit being built, for `aegis_build_info` and `--version`.
//! A build outside a checkout (a source tarball, a container without `.git`) can pass it in.

use std::process::Command;

fn main() {
    let commit = std::env::var("AEGIS_COMMIT").ok().or_else(git_commit);
    println!(
        "cargo:rustc-env=AEGIS_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rerun-if-env-changed=AEGIS_COMMIT");
    // Only paths that exist: cargo reruns the script at every build for one that does not.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        let path = format!("../../.git/{path}");
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
