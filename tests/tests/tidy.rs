//! Tidy checks: house rules that are cheap to verify mechanically, so the style guide cannot
//! drift from the code (see `docs/dev/style.md`).

use std::fs;
use std::path::{Path, PathBuf};

/// Lines a source file may have before it must be split by responsibility (tests included:
/// they move to a `<module>/tests.rs` of their own).
const MAX_LINES: usize = 800;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = ["crates", "benches", "tests"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 20, "tidy found too few files: {files:?}");
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn test_tidy_every_file_opens_with_module_doc() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            !fs::read_to_string(path)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        offenders.is_empty(),
        "files without a leading `//!` line: {offenders:?}"
    );
}

#[test]
fn test_tidy_unsafe_lives_only_in_sys_modules() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| !path.components().any(|c| c.as_os_str() == "sys"))
        .filter(|path| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    let code = line.split("//").next().unwrap_or_default();
                    // Spelled in pieces so that this file does not match itself.
                    ["{", "fn", "impl"]
                        .iter()
                        .any(|after| code.contains(&format!("{} {after}", "unsafe")))
                })
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        offenders.is_empty(),
        "`unsafe` outside a sys/ module: {offenders:?}"
    );
}

#[test]
fn test_tidy_ignored_tests_carry_a_reason() {
    let mut offenders = Vec::new();
    for path in rust_files() {
        for (number, line) in fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            let trimmed = line.trim_start();
            // The attribute is spelled in pieces so that this file does not match itself.
            let ignore = concat!("#[", "ignore");
            let bare_ignore = trimmed.starts_with(&format!("{ignore}]"));
            let bad_reason = trimmed.starts_with(&format!("{ignore} ="))
                && !trimmed.starts_with(&format!("{ignore} = \"privileged:"))
                && !trimmed.starts_with(&format!("{ignore} = \"network:"));
            if bare_ignore || bad_reason || trimmed.starts_with(concat!("#[", "should_panic")) {
                offenders.push(format!("{}:{}", relative(&path), number + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "ignored tests without a privileged:/network: reason, or should_panic: {offenders:?}"
    );
}

#[test]
fn test_tidy_files_stay_below_the_split_threshold() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter_map(|path| {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", relative(&path)))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "split these by responsibility: {offenders:?}"
    );
}
