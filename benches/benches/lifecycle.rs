//! criterion benches. Unprivileged: id parsing, mount planning, manager overhead over fakes.
//! With `COPPICE_PRIVILEGED_BENCH=1` as root, also the real sandbox lifecycle beside `bwrap`.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;

use coppice_benches::create_exec_true_kill;
use coppice_core::clock::SystemClock;
use coppice_core::manager::{Backends, ManagerConfig};
use coppice_core::store::Store;
use coppice_core::testing::{FakeNetPolicy, FakeRuntime, FakeStorage};
use coppice_core::{SandboxId, SandboxManager, SandboxSpec};
use criterion::{Criterion, criterion_group, criterion_main};

fn parse_ids(c: &mut Criterion) {
    c.bench_function("sandbox_id/parse", |b| {
        b.iter(|| black_box("i1a2b3c4d5e6f7g8h9j0").parse::<SandboxId>())
    });
}

#[cfg(target_os = "linux")]
fn mount_plan(c: &mut Criterion) {
    use coppice_core::storage::{BindMount, RootFs};
    let root = RootFs::Overlay {
        lower: vec!["/var/lib/coppice/storage/layers/base/tree".into()],
        upper: "/var/lib/coppice/storage/sandboxes/x/upper".into(),
        work: "/var/lib/coppice/storage/sandboxes/x/work".into(),
        binds: vec![BindMount {
            source: "/usr".into(),
            target: "/usr".into(),
            read_only: true,
        }],
    };
    c.bench_function("mount_plan/base", |b| {
        b.iter(|| {
            coppice_linux::mount_plan::plan(
                black_box(&root),
                &[],
                std::path::Path::new("/dev"),
                std::path::Path::new("/var/lib/coppice/run/a/dev"),
                512,
            )
        })
    });
}

#[cfg(not(target_os = "linux"))]
fn mount_plan(_c: &mut Criterion) {}

fn manager_overhead(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let manager = tokio.block_on(async {
        let backends = Backends {
            runtime: Arc::new(FakeRuntime::default()),
            storage: Arc::new(FakeStorage::with_templates(&["base"])),
            net: Arc::new(FakeNetPolicy::default()),
        };
        SandboxManager::start(
            ManagerConfig::default(),
            backends,
            Store::in_memory().expect("store"),
            Arc::new(SystemClock),
        )
        .await
        .expect("manager")
    });
    let spec = SandboxSpec::new("base".parse().expect("template"));
    c.bench_function("manager/create_exec_kill_fakes", |b| {
        b.iter(|| {
            tokio
                .block_on(create_exec_true_kill(&manager, &spec))
                .expect("cycle")
        });
    });
}

#[cfg(target_os = "linux")]
fn real_lifecycle(c: &mut Criterion) {
    use coppice_tests::harness::{HarnessPaths, workspace_binary};
    if std::env::var("COPPICE_PRIVILEGED_BENCH").as_deref() != Ok("1") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = HarnessPaths::new(dir.path());
    let init = coppice_linux::InitCommand::binary(workspace_binary("coppice-init"));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let manager = tokio
        .block_on(paths.manager(&init))
        .expect("manager (build coppice-init in release first)");
    let spec = SandboxSpec::new("base".parse().expect("template"));
    let mut group = c.benchmark_group("lifecycle");
    group.bench_function("coppice_create_exec_true_destroy", |b| {
        b.iter(|| {
            tokio
                .block_on(create_exec_true_kill(&manager, &spec))
                .expect("cycle")
        });
    });
    group.bench_function("bwrap_true", |b| {
        b.iter(|| coppice_benches::bwrap_true().status().expect("bwrap"))
    });
    group.finish();
    paths.remove_groups();
}

#[cfg(not(target_os = "linux"))]
fn real_lifecycle(_c: &mut Criterion) {}

criterion_group!(
    benches,
    parse_ids,
    mount_plan,
    manager_overhead,
    real_lifecycle
);
criterion_main!(benches);
