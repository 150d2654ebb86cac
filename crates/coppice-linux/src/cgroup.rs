//! cgroup paths and limit files for one sandbox, nested under the daemon's own cgroups.
//!
//! These machines run the cgroup v1 hybrid layout: memory, pids, cpu and freezer are v1
//! hierarchies under `/sys/fs/cgroup/<controller>`, and cgroup2 at `/sys/fs/cgroup/unified`
//! has no controllers but offers `cgroup.kill`. Each sandbox gets a directory
//! `<own cgroup>/<group>/<sandbox id>` in every one of them; "own cgroup" comes from
//! `/proc/self/cgroup`, so the sandbox stays inside the accounting the daemon itself is under.
//!
//! Everything here is plain file I/O rooted at configurable paths, so it runs against a fake
//! tree in a tempdir.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coppice_core::SandboxId;

/// The v1 controllers every sandbox is placed in.
pub const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// CFS period used for CPU quotas.
const CPU_PERIOD_US: u64 = 100_000;

/// Where the hierarchies are mounted and what coppice's group is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// The directory holding one v1 hierarchy per controller.
    pub v1_root: PathBuf,
    /// The cgroup2 mount, if any (used for `cgroup.kill`).
    pub unified_root: Option<PathBuf>,
    /// `/proc/self/cgroup`, to find the daemon's own cgroups.
    pub proc_self_cgroup: PathBuf,
    /// The group all sandboxes of this daemon live under.
    pub group: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            v1_root: PathBuf::from("/sys/fs/cgroup"),
            unified_root: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            proc_self_cgroup: PathBuf::from("/proc/self/cgroup"),
            group: "coppice".to_owned(),
        }
    }
}

/// A cgroup problem.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/cgroup` could not be read.
    #[error("cannot read {path}")]
    ReadSelf {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A line of `/proc/self/cgroup` does not parse.
    #[error("unexpected line {line} in /proc/self/cgroup: {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A required v1 controller is not mounted.
    #[error("cgroup v1 controller {controller} is not available under {root}")]
    MissingController {
        /// The controller.
        controller: &'static str,
        /// Where it was looked for.
        root: PathBuf,
    },
    /// A cgroup file operation failed.
    #[error("cgroup operation {op} failed on {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The freezer did not reach the wanted state in time (a freeze is undone).
    #[error("freezer did not reach {wanted} within {waited:?} (still {state})")]
    FreezeTimeout {
        /// The state asked for.
        wanted: &'static str,
        /// The state last read.
        state: String,
        /// How long it waited.
        waited: Duration,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// Parses `/proc/<pid>/cgroup` into controller → path. The cgroup2 entry (`0::/path`) is under
/// the key `""`; comma-joined controllers (`cpu,cpuacct`) get one entry each.
///
/// # Errors
/// [`CgroupError::Parse`] for a line that is not `id:controllers:path`.
pub fn parse_proc_cgroup(text: &str) -> Result<BTreeMap<String, String>> {
    let mut paths = BTreeMap::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::Parse {
                line: index + 1,
                text: line.to_owned(),
            });
        };
        if !path.starts_with('/') {
            return Err(CgroupError::Parse {
                line: index + 1,
                text: line.to_owned(),
            });
        }
        if controllers.is_empty() {
            paths.insert(String::new(), path.to_owned());
        }
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            paths.insert(controller.to_owned(), path.to_owned());
        }
    }
    Ok(paths)
}

/// One directory of a sandbox's cgroup set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The v1 controller, or `None` for the cgroup2 directory.
    pub controller: Option<&'static str>,
    /// The directory.
    pub path: PathBuf,
}

/// The cgroup directories of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroups {
    dirs: Vec<CgroupDir>,
}

/// A limit written into a cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    /// The controller whose directory holds the file.
    pub controller: &'static str,
    /// The file name.
    pub file: &'static str,
    /// The value written.
    pub value: String,
}

/// The limit files for a sandbox, in the order they are written.
pub fn limit_writes(memory_mb: u32, max_pids: u32, vcpus: u32) -> Vec<LimitWrite> {
    let memory_bytes = u64::from(memory_mb) << 20;
    let quota = CPU_PERIOD_US * u64::from(vcpus);
    vec![
        LimitWrite {
            controller: "memory",
            file: "memory.limit_in_bytes",
            value: memory_bytes.to_string(),
        },
        LimitWrite {
            controller: "pids",
            file: "pids.max",
            value: max_pids.to_string(),
        },
        LimitWrite {
            controller: "cpu",
            file: "cpu.cfs_period_us",
            value: CPU_PERIOD_US.to_string(),
        },
        LimitWrite {
            controller: "cpu",
            file: "cpu.cfs_quota_us",
            value: quota.to_string(),
        },
    ]
}

/// Joins an absolute cgroup path below a hierarchy root.
fn below(root: &Path, cgroup_path: &str) -> PathBuf {
    root.join(cgroup_path.trim_start_matches('/'))
}

impl SandboxCgroups {
    /// The directories for sandbox `id`, given the daemon's `/proc/self/cgroup` content.
    ///
    /// # Errors
    /// A parse error, or a v1 controller that is not mounted under `config.v1_root`.
    pub fn plan(config: &CgroupConfig, proc_self_cgroup: &str, id: &SandboxId) -> Result<Self> {
        Ok(Self::group_dirs(config, proc_self_cgroup)?.sandbox(id))
    }

    /// The group directories (parents of every sandbox's directories).
    ///
    /// # Errors
    /// As [`SandboxCgroups::plan`].
    pub fn group_dirs(config: &CgroupConfig, proc_self_cgroup: &str) -> Result<Self> {
        let own = parse_proc_cgroup(proc_self_cgroup)?;
        let mut dirs = Vec::new();
        for controller in V1_CONTROLLERS {
            let root = config.v1_root.join(controller);
            if !root.is_dir() {
                return Err(CgroupError::MissingController { controller, root });
            }
            let own_path = own.get(controller).map_or("/", String::as_str);
            dirs.push(CgroupDir {
                controller: Some(controller),
                path: below(&root, own_path).join(&config.group),
            });
        }
        if let Some(unified) = config
            .unified_root
            .as_ref()
            .filter(|root| root.join("cgroup.procs").is_file())
        {
            let own_path = own.get("").map_or("/", String::as_str);
            dirs.push(CgroupDir {
                controller: None,
                path: below(unified, own_path).join(&config.group),
            });
        }
        Ok(Self { dirs })
    }

    fn sandbox(&self, id: &SandboxId) -> Self {
        let dirs = self
            .dirs
            .iter()
            .map(|dir| CgroupDir {
                controller: dir.controller,
                path: dir.path.join(id.as_str()),
            })
            .collect();
        Self { dirs }
    }

    /// Every directory.
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The directory of a v1 controller.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controller == Some(controller))
            .map(|d| d.path.as_path())
    }

    /// The cgroup2 directory, if the host has one.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controller.is_none())
            .map(|d| d.path.as_path())
    }

    /// The `cgroup.procs` files a process writes its pid into to join the sandbox.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// Sandbox ids that have a directory in the memory hierarchy under this group.
    ///
    /// # Errors
    /// A read failure other than the group not existing yet.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxId>> {
        let Some(group) = self.controller_dir("memory") else {
            return Ok(Vec::new());
        };
        let entries = match fs::read_dir(group) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "list",
                    path: group.to_owned(),
                    source,
                });
            }
        };
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Creates every directory (and missing parents) and writes the limits.
    ///
    /// # Errors
    /// The first failing directory or file; the caller removes what was made.
    pub fn create(&self, limits: &[LimitWrite]) -> Result<()> {
        for dir in &self.dirs {
            fs::create_dir_all(&dir.path).map_err(|source| CgroupError::Io {
                op: "create",
                path: dir.path.clone(),
                source,
            })?;
        }
        for limit in limits {
            let Some(dir) = self.controller_dir(limit.controller) else {
                continue;
            };
            write_file(&dir.join(limit.file), &limit.value, "write limit")?;
        }
        Ok(())
    }

    /// Pids in the sandbox, read from the pids hierarchy.
    ///
    /// # Errors
    /// A read failure; a missing directory counts as empty.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let Some(dir) = self.controller_dir("pids") else {
            return Ok(Vec::new());
        };
        let path = dir.join("cgroup.procs");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Io {
                op: "read procs",
                path,
                source,
            }),
        }
    }

    /// Asks the kernel to SIGKILL every process through cgroup2's `cgroup.kill`. Returns false
    /// when the host offers no `cgroup.kill`, so the caller must signal each pid itself.
    ///
    /// # Errors
    /// A write failure other than the directory being gone.
    pub fn kill_all(&self) -> Result<bool> {
        let Some(dir) = self.unified_dir() else {
            return Ok(false);
        };
        let file = dir.join("cgroup.kill");
        if !file.exists() {
            return Ok(false);
        }
        match fs::write(&file, "1") {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(CgroupError::Io {
                op: "kill",
                path: file,
                source,
            }),
        }
    }

    /// Whether the v1 freezer holds the sandbox frozen (or freezing); false without one.
    ///
    /// # Errors
    /// A read failure.
    pub fn is_frozen(&self) -> Result<bool> {
        let Some(dir) = self.controller_dir("freezer") else {
            return Ok(false);
        };
        let file = dir.join("freezer.state");
        match fs::read_to_string(&file) {
            Ok(state) => Ok(state.trim() != "THAWED"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CgroupError::Io {
                op: "read freezer state",
                path: file,
                source,
            }),
        }
    }

    /// Freezes or thaws the sandbox through the v1 freezer.
    ///
    /// # Errors
    /// A write failure.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let Some(dir) = self.controller_dir("freezer") else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Ok(());
        }
        write_file(
            &dir.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
            "freeze",
        )
    }

    /// Freezes or thaws through the v1 freezer and waits until the kernel reports the state
    /// reached (a freeze must stop tasks in flight, which can take a moment with busy ones).
    /// A freeze that does not complete in time is undone.
    ///
    /// # Errors
    /// A missing freezer, a write or read failure, or `FreezeTimeout`.
    pub fn set_frozen_and_wait(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let dir = self
            .controller_dir("freezer")
            .ok_or(CgroupError::MissingController {
                controller: "freezer",
                root: PathBuf::new(),
            })?;
        let file = dir.join("freezer.state");
        let wanted = if frozen { "FROZEN" } else { "THAWED" };
        write_file(&file, wanted, "freeze")?;
        let deadline = Instant::now() + timeout;
        // Gentle growth: a freeze usually completes within a millisecond, and a doubling
        // pause would overshoot it by as much again.
        let mut pause = Duration::from_micros(25);
        loop {
            let state = fs::read_to_string(&file).map_err(|source| CgroupError::Io {
                op: "read freezer state",
                path: file.clone(),
                source,
            })?;
            if state.trim() == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if frozen {
                    let _ = write_file(&file, "THAWED", "thaw");
                }
                return Err(CgroupError::FreezeTimeout {
                    wanted,
                    state: state.trim().to_owned(),
                    waited: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(2));
        }
    }

    /// How many OOM kills the memory cgroup has seen.
    ///
    /// # Errors
    /// A read failure.
    pub fn oom_kills(&self) -> Result<u64> {
        let Some(dir) = self.controller_dir("memory") else {
            return Ok(0);
        };
        let path = dir.join("memory.oom_control");
        let text = fs::read_to_string(&path).map_err(|source| CgroupError::Io {
            op: "read oom",
            path,
            source,
        })?;
        Ok(parse_oom_kills(&text))
    }

    /// Memory in use, in bytes.
    ///
    /// # Errors
    /// A read failure.
    pub fn memory_bytes(&self) -> Result<u64> {
        let Some(dir) = self.controller_dir("memory") else {
            return Ok(0);
        };
        read_number(&dir.join("memory.usage_in_bytes"))
    }

    /// Tasks counted by the pids controller.
    ///
    /// # Errors
    /// A read failure.
    pub fn pids_current(&self) -> Result<u64> {
        let Some(dir) = self.controller_dir("pids") else {
            return Ok(0);
        };
        read_number(&dir.join("pids.current"))
    }

    /// Removes every directory with `remove_dir` (`rmdir` on cgroupfs, which ignores the
    /// control files). Missing ones are fine. `EBUSY` (tasks not yet gone) is
    /// reported so the caller can retry.
    ///
    /// # Errors
    /// The first failing `rmdir`.
    pub fn remove(&self, remove_dir: &dyn Fn(&Path) -> io::Result<()>) -> Result<()> {
        for dir in &self.dirs {
            match remove_dir(&dir.path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "remove",
                        path: dir.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The `oom_kill` counter of a v1 `memory.oom_control` file (0 when absent).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn read_number(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().parse().unwrap_or(0))
}

fn write_file(path: &Path, value: &str, op: &'static str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/\n";

    fn fake_tree() -> (tempfile::TempDir, CgroupConfig) {
        let dir = tempfile::tempdir().unwrap();
        for controller in V1_CONTROLLERS {
            fs::create_dir_all(dir.path().join("v1").join(controller)).unwrap();
        }
        fs::create_dir_all(dir.path().join("unified")).unwrap();
        fs::write(dir.path().join("unified/cgroup.procs"), "").unwrap();
        let config = CgroupConfig {
            v1_root: dir.path().join("v1"),
            unified_root: Some(dir.path().join("unified")),
            proc_self_cgroup: dir.path().join("self"),
            group: "coppice".into(),
        };
        (dir, config)
    }

    #[test]
    fn test_parse_proc_cgroup_hybrid_layout() {
        let paths = parse_proc_cgroup(HYBRID).unwrap();
        assert_eq!(paths["memory"], "/process_api/abc");
        assert_eq!(paths["cpu"], "/x");
        assert_eq!(paths["cpuacct"], "/x");
        assert_eq!(paths[""], "/");
        assert_eq!(paths["name=systemd"], "/");
    }

    #[test]
    fn test_parse_proc_cgroup_rejects_garbage() {
        assert!(matches!(
            parse_proc_cgroup("nonsense\n"),
            Err(CgroupError::Parse { line: 1, .. })
        ));
    }

    #[test]
    fn test_plan_nests_under_own_memory_cgroup() {
        let (dir, config) = fake_tree();
        let cgroups = SandboxCgroups::plan(&config, HYBRID, &"sbx1".parse().unwrap()).unwrap();
        assert_eq!(
            cgroups.controller_dir("memory").unwrap(),
            dir.path().join("v1/memory/process_api/abc/coppice/sbx1")
        );
        assert_eq!(
            cgroups.controller_dir("pids").unwrap(),
            dir.path().join("v1/pids/coppice/sbx1")
        );
        assert_eq!(
            cgroups.unified_dir().unwrap(),
            dir.path().join("unified/coppice/sbx1")
        );
    }

    #[test]
    fn test_plan_missing_controller_is_a_clear_error() {
        let (dir, config) = fake_tree();
        fs::remove_dir(dir.path().join("v1/freezer")).unwrap();
        let err = SandboxCgroups::plan(&config, HYBRID, &"s".parse().unwrap()).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::MissingController {
                controller: "freezer",
                ..
            }
        ));
    }

    #[test]
    fn test_create_writes_limits_and_remove_cleans_up() {
        let (_dir, config) = fake_tree();
        let cgroups = SandboxCgroups::plan(&config, HYBRID, &"s".parse().unwrap()).unwrap();
        cgroups.create(&limit_writes(100, 50, 2)).unwrap();
        let memory = cgroups.controller_dir("memory").unwrap();
        assert_eq!(
            fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
            "104857600"
        );
        let cpu = cgroups.controller_dir("cpu").unwrap();
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "200000"
        );
        cgroups.remove(&|dir| fs::remove_dir_all(dir)).unwrap();
        assert!(cgroups.dirs().iter().all(|d| !d.path.exists()));
    }

    #[test]
    fn test_list_sandboxes_reads_group_dir() {
        let (_dir, config) = fake_tree();
        let cgroups = SandboxCgroups::plan(&config, HYBRID, &"abc".parse().unwrap()).unwrap();
        cgroups.create(&[]).unwrap();
        let group = SandboxCgroups::group_dirs(&config, HYBRID).unwrap();
        assert_eq!(
            group.list_sandboxes().unwrap(),
            ["abc".parse::<SandboxId>().unwrap()]
        );
    }

    #[test]
    fn test_set_frozen_and_wait_reads_back_the_state() {
        let (dir, config) = fake_tree();
        let cgroups = SandboxCgroups::plan(&config, HYBRID, &"sbx".parse().unwrap()).unwrap();
        cgroups.create(&[]).unwrap();
        // A plain file echoes what was written, as a freezer that completes at once.
        cgroups
            .set_frozen_and_wait(true, Duration::from_millis(50))
            .unwrap();
        let state_file = cgroups
            .controller_dir("freezer")
            .unwrap()
            .join("freezer.state");
        assert_eq!(fs::read_to_string(&state_file).unwrap(), "FROZEN");
        cgroups
            .set_frozen_and_wait(false, Duration::from_millis(50))
            .unwrap();
        assert_eq!(fs::read_to_string(&state_file).unwrap(), "THAWED");
        drop(dir);
    }

    #[test]
    fn test_parse_oom_kills_table() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), 0);
    }
}
