//! Checks that need no GPU: the module list matches `kernels/`, every launch site in the
//! CUDA backend names a listed kernel of its module and every listed kernel is launched,
//! every listed kernel name is defined in its source, and (with libnvrtc) every module compiles to PTX that `ptxas`
//! accepts for sm_90 without register spills.

use super::kernels::{compile, nvrtc_present, KernelModule};
use std::path::{Path, PathBuf};

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

#[test]
fn every_kernel_file_is_a_module_and_back() {
    let mut on_disk: Vec<String> = std::fs::read_dir(kernels_dir())
        .expect("kernels/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = KernelModule::ALL
        .iter()
        .map(|m| m.file_name().to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "kernels/*.cu and KernelModule::ALL differ");
}

/// Every `.rs` file below `dir` except `tests.rs` files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
}

/// `(module, kernel names)` of every `func(KernelModule::X, …)` call in the crate's Rust
/// sources (the ops' CUDA sides live beside their CPU sides, so all of `src/` is read): the
/// module named and every `"…_f32"` literal inside the call's parentheses (a call may
/// choose between names).
fn launch_sites() -> Vec<(String, Vec<String>, String)> {
    let mut files = vec![];
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    let mut out = vec![];
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        for (i, _) in src.match_indices(".func(") {
            let body = &src[i + ".func(".len()..];
            let (mut depth, mut end) = (1, 0);
            for (j, ch) in body.char_indices() {
                depth += match ch {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    end = j;
                    break;
                }
            }
            let call = &body[..end];
            let module = call
                .split("KernelModule::")
                .nth(1)
                .map(|r| r.chars().take_while(|c| c.is_alphanumeric()).collect())
                .unwrap_or_default();
            let names = call
                .split('"')
                .skip(1)
                .step_by(2)
                .filter(|n| n.ends_with("_f32"))
                .map(str::to_string)
                .collect();
            let place = format!("{}:{}", path.display(), src[..i].lines().count());
            out.push((module, names, place));
        }
    }
    out
}

#[test]
fn launch_sites_name_listed_kernels_and_every_listed_kernel_is_launched() {
    let sites = launch_sites();
    assert!(sites.len() >= 15, "found only {} launch sites", sites.len());
    let mut launched: Vec<(String, String)> = vec![];
    for (module, names, place) in &sites {
        let m = KernelModule::ALL
            .iter()
            .find(|m| format!("{m:?}") == *module)
            .unwrap_or_else(|| panic!("{place}: launch without a KernelModule::X literal"));
        assert!(
            !names.is_empty(),
            "{place}: no kernel name literal in the call"
        );
        for n in names {
            assert!(
                m.kernel_names().contains(&n.as_str()),
                "{place}: {n} is launched from {module} but not in its kernel_names()"
            );
            launched.push((module.clone(), n.clone()));
        }
    }
    for m in KernelModule::ALL {
        for n in m.kernel_names() {
            assert!(
                launched
                    .iter()
                    .any(|(a, b)| *a == format!("{m:?}") && b == n),
                "{m:?}::{n} is listed in kernel_names() but never launched"
            );
        }
    }
}

/// `extern "C" __global__ void name(` appears in the module's source.
fn defines(src: &str, name: &str) -> bool {
    src.match_indices(&format!(" {name}(")).any(|(i, _)| {
        let line_start = src[..i].rfind("extern \"C\"").unwrap_or(0);
        let head = &src[line_start..i];
        head.contains("__global__") && !head.contains(';') && !head.contains('}')
    })
}

#[test]
fn every_launched_kernel_is_defined_in_its_source() {
    for m in KernelModule::ALL {
        assert!(!m.kernel_names().is_empty());
        for name in m.kernel_names() {
            assert!(
                defines(m.source(), name),
                "{name} is not an extern \"C\" __global__ in kernels/{}",
                m.file_name()
            );
            assert!(name.ends_with("_f32"), "{name}: kernel names end in _f32");
        }
        // And every entry point in the source is launched from Rust.
        for (i, _) in m.source().match_indices("__global__ void ") {
            let rest = &m.source()[i + "__global__ void ".len()..];
            let name = &rest[..rest.find('(').unwrap()];
            assert!(
                m.kernel_names().contains(&name),
                "kernels/{}: {name} is never launched (add it to kernel_names)",
                m.file_name()
            );
        }
    }
    assert!(!defines(
        "extern \"C\" __global__ void foo_f32(int x);\n bar_f32(",
        "bar_f32"
    ));
}

/// Registers and spills per kernel from `ptxas -v` output.
fn parse_ptxas(log: &str) -> Vec<(String, u32, u32)> {
    let mut out = vec![];
    let mut current = String::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            current = rest[..rest.find('\'').unwrap_or(rest.len())].to_string();
        }
        if line.contains("bytes spill stores") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            // "N bytes stack frame, S bytes spill stores, L bytes spill loads"
            let spill = nums.get(1).copied().unwrap_or(0) + nums.get(2).copied().unwrap_or(0);
            out.push((current.clone(), 0, spill));
        }
        if let Some(i) = line.find("Used ") {
            let regs: u32 = line[i + 5..]
                .split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if let Some(last) = out.last_mut() {
                last.1 = regs;
            }
        }
    }
    out
}

#[test]
fn every_module_compiles_with_nvrtc_and_ptxas_reports_no_spills() {
    if !nvrtc_present() {
        assert!(
            std::env::var("REQUIRE_NVRTC").as_deref() != Ok("1"),
            "REQUIRE_NVRTC=1 but libnvrtc.so.12 cannot be loaded (set LD_LIBRARY_PATH)"
        );
        println!("skipped: libnvrtc.so.12 not found (run scripts/cuda-check.sh)");
        return;
    }
    let ptxas = std::env::var("DIFFNMF_PTXAS").ok();
    let dir = tempfile::tempdir().unwrap();
    for m in KernelModule::ALL {
        let ptx = compile(m).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ptx.contains(".target sm_90"),
            "{}: PTX not for compute_90",
            m.file_name()
        );
        for name in m.kernel_names() {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{}: {name} missing from PTX",
                m.file_name()
            );
        }
        let Some(ptxas) = &ptxas else { continue };
        let path = dir.path().join(format!("{}.ptx", m.file_name()));
        std::fs::write(&path, &ptx).unwrap();
        let out = std::process::Command::new(ptxas)
            .args(["-v", "-arch=sm_90", "-o"])
            .arg(dir.path().join("out.cubin"))
            .arg(&path)
            .output()
            .expect("run ptxas");
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ptxas failed on {}:\n{log}",
            m.file_name()
        );
        let rows = parse_ptxas(&log);
        assert_eq!(
            rows.len(),
            m.kernel_names().len(),
            "ptxas output not understood:\n{log}"
        );
        for (name, regs, spill) in rows {
            println!(
                "ptxas sm_90 {:<14} {name:<26} registers {regs:>3}  spill bytes {spill}",
                m.file_name()
            );
            assert_eq!(spill, 0, "{name} spills registers:\n{log}");
        }
    }
    if ptxas.is_none() {
        println!("ptxas not run (DIFFNMF_PTXAS unset)");
    }
}
