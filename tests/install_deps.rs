//! `scripts/install-deps.sh` decides from what bindgen really loads: a machine with only `libclang-cpp` (not
//! libclang) must get libclang installed. Each case lays out a fake root and asks the script, in dry-run
//! mode, what it would install.

use std::path::Path;
use std::process::Command;

fn needs(files: &[&str]) -> Vec<String> {
    let root = std::env::temp_dir().join(format!("slm-install-deps-{}-{}", std::process::id(), files.len()));
    let _ = std::fs::remove_dir_all(&root);
    for f in files {
        let path = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps.sh"))
        .env("INSTALL_DEPS_ROOT", &root)
        .env("INSTALL_DEPS_DRY_RUN", "1")
        .env("INSTALL_DEPS_SKIP_TOOLS", "1")
        .env_remove("LIBCLANG_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&root);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("need:")).expect("a need: line");
    line.split_whitespace().map(str::to_owned).collect()
}

const HEADERS: &str = "/usr/lib/llvm-14/lib/clang/14.0.6/include/stdbool.h";

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    assert_eq!(needs(&["/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", HEADERS]), ["libclang1-14"]);
}

#[test]
fn a_bare_machine_gets_libclang_and_its_headers() {
    assert_eq!(needs(&[]), ["libclang1-14", "libclang-common-14-dev"]);
}

#[test]
fn the_names_bindgen_loads_are_enough() {
    for lib in [
        "/usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "/usr/lib/llvm-14/lib/libclang.so.1",
        "/usr/lib/llvm-16/lib/libclang.so",
        "/usr/lib/x86_64-linux-gnu/libclang-16.so.16.0.6",
    ] {
        assert!(needs(&[lib, HEADERS]).is_empty(), "{lib}");
    }
}

#[test]
fn libclang_without_its_headers_gets_the_headers() {
    assert_eq!(needs(&["/usr/lib/x86_64-linux-gnu/libclang-14.so.1"]), ["libclang-common-14-dev"]);
}
