//! `FakeOverlaySys`: records every call instead of touching ownership, hands out predictable
//! "random" bytes, and fails on request, so tests run unprivileged on any host.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::OverlaySys;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SysCall {
    /// `lchown(path, uid, gid)`.
    Lchown { path: PathBuf, uid: u32, gid: u32 },
    /// `fill_random` of `len` bytes.
    FillRandom { len: usize },
    /// `make_whiteout(path)`.
    Whiteout { path: PathBuf },
    /// `copy_xattrs(src, dst)`.
    CopyXattrs { src: PathBuf, dst: PathBuf },
    /// `make_volume_dir(parent, name)`.
    VolumeDir { parent: PathBuf, name: String },
}

/// Which operation an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysOp {
    Lchown,
    FillRandom,
    Whiteout,
    CopyXattrs,
    VolumeDir,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<SysCall>,
    failures: Vec<(SysOp, i32)>,
    random_seed: u8,
}

/// A recording `OverlaySys` for tests.
#[derive(Debug, Default)]
pub(crate) struct FakeOverlaySys {
    state: Mutex<FakeState>,
}

impl FakeOverlaySys {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of `op` fail with `errno`.
    pub(crate) fn fail_next(&self, op: SysOp, errno: i32) {
        self.state().failures.push((op, errno));
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<SysCall> {
        self.state().calls.clone()
    }

    /// The owner `path` was last given, if any.
    pub(crate) fn owner(&self, path: &Path) -> Option<(u32, u32)> {
        self.state().calls.iter().rev().find_map(|call| match call {
            SysCall::Lchown { path: p, uid, gid } if p == path => Some((*uid, *gid)),
            _ => None,
        })
    }

    fn take_failure(state: &mut FakeState, op: SysOp) -> io::Result<()> {
        match state
            .failures
            .iter()
            .position(|(failing, _)| *failing == op)
        {
            Some(index) => Err(io::Error::from_raw_os_error(state.failures.remove(index).1)),
            None => Ok(()),
        }
    }
}

impl OverlaySys for FakeOverlaySys {
    /// Records the call and leaves an empty regular file, so the tree shows where it went.
    fn make_whiteout(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(SysCall::Whiteout {
            path: path.to_owned(),
        });
        Self::take_failure(&mut state, SysOp::Whiteout)?;
        std::fs::File::create_new(path).map(drop)
    }

    fn copy_xattrs(&self, src: &Path, dst: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(SysCall::CopyXattrs {
            src: src.to_owned(),
            dst: dst.to_owned(),
        });
        Self::take_failure(&mut state, SysOp::CopyXattrs)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(SysCall::Lchown {
            path: path.to_owned(),
            uid,
            gid,
        });
        Self::take_failure(&mut state, SysOp::Lchown)
    }

    fn fill_random(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(SysCall::FillRandom { len: buf.len() });
        Self::take_failure(&mut state, SysOp::FillRandom)?;
        state.random_seed = state.random_seed.wrapping_add(1);
        let seed = state.random_seed;
        for (index, byte) in buf.iter_mut().enumerate() {
            *byte = seed
                .wrapping_mul(31)
                .wrapping_add(u8::try_from(index % 256).unwrap_or(0));
        }
        Ok(())
    }

    fn make_volume_dir(&self, parent: &Path, name: &str) -> io::Result<bool> {
        let mut state = self.state();
        state.calls.push(SysCall::VolumeDir {
            parent: parent.to_owned(),
            name: name.to_owned(),
        });
        Self::take_failure(&mut state, SysOp::VolumeDir)?;
        std::fs::create_dir(parent.join(name)).map(|()| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fake_fail_next_fails_once() {
        let fake = FakeOverlaySys::default();
        fake.fail_next(SysOp::Lchown, libc::EPERM);

        let first = fake.lchown(Path::new("/a"), 1, 1);
        let second = fake.lchown(Path::new("/a"), 2, 2);

        assert_eq!(first.unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(second.is_ok());
        assert_eq!(fake.owner(Path::new("/a")), Some((2, 2)));
    }

    #[test]
    fn test_fake_fill_random_differs_between_calls() {
        let fake = FakeOverlaySys::default();
        let mut first = [0u8; 16];
        let mut second = [0u8; 16];

        fake.fill_random(&mut first).unwrap();
        fake.fill_random(&mut second).unwrap();

        assert_ne!(first, second);
    }
}
