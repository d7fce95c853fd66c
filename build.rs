//! Compiles every `bpf/*.bpf.c` into a BPF object embedded in the binary,
//! against pinned headers only: `vendor/vmlinux.h` and the libbpf headers
//! that libbpf-sys exports (`DEP_BPF_INCLUDE`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(var: &str, candidates: &[&str]) -> Option<String> {
    println!("cargo:rerun-if-env-changed={var}");
    if let Ok(v) = env::var(var) {
        return Some(v);
    }
    candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|c| c.to_string())
}

fn run(cmd: &mut Command, what: &str) {
    let line = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what} failed ({s}): {line}"),
        Err(e) => panic!("{what} could not start ({e}): {line}"),
    }
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports DEP_BPF_INCLUDE");
    let vendor = manifest.join("vendor");
    let bpf_dir = manifest.join("bpf");

    let Some(clang) = tool("CLANG", &["clang-19", "clang"]) else {
        eprintln!("error: clang not found: install the Debian package clang-19 (apt-get install clang-19) or set CLANG");
        std::process::exit(1);
    };
    let strip = tool("LLVM_STRIP", &["llvm-strip-19", "llvm-strip"]);
    if strip.is_none() {
        eprintln!("error: llvm-strip not found: install the Debian package llvm-19 (apt-get install llvm-19) or set LLVM_STRIP");
        std::process::exit(1);
    }

    println!(
        "cargo:rerun-if-changed={}",
        vendor.join("vmlinux.h").display()
    );
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .expect("read bpf/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    sources.sort();
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
    }
    for src in sources
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
    {
        let name = src
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".bpf.c", ".bpf.o");
        let obj = out.join(&name);
        run(
            Command::new(&clang)
                .args([
                    "-g",
                    "-O2",
                    "-target",
                    "bpf",
                    "-D__TARGET_ARCH_x86",
                    "-Wall",
                ])
                .arg(format!("-I{}", vendor.display()))
                .arg(format!("-I{}", libbpf_include))
                .arg(format!("-I{}", bpf_dir.display()))
                .arg("-c")
                .arg(src)
                .arg("-o")
                .arg(&obj),
            "compiling BPF (needs Debian package clang-19)",
        );
        run(
            Command::new(strip.as_deref().unwrap())
                .arg("-g")
                .arg(Path::new(&obj)),
            "stripping BPF object (needs Debian package llvm-19)",
        );
    }
}
