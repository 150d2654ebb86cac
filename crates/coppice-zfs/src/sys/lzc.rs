//! ZFS operations through libzfs_core (the `libzfs-core` feature): a clone, a snapshot and a
//! promotion are one ioctl each instead of a `zfs` process. What libzfs_core cannot do the
//! way coppice needs (listing, `create -p`, recursive destroy, mounting a new clone) goes to
//! the `zfs` command.
//!
//! Declares the few libzfs_core and libnvpair functions it calls itself (OpenZFS 2.x
//! signatures); links `zfs_core` and `nvpair`.

use std::ffi::{CString, c_char, c_int};
use std::io;

use super::{CommandZfs, ZfsError, ZfsSys};
use crate::command::ZfsOp;

/// libnvpair's `nvlist_t`, only ever behind a pointer.
#[repr(C)]
struct NvListRaw {
    _opaque: [u8; 0],
}

#[link(name = "zfs_core")]
unsafe extern "C" {
    fn libzfs_core_init() -> c_int;
    fn libzfs_core_fini();
    fn lzc_snapshot(
        snaps: *mut NvListRaw,
        props: *mut NvListRaw,
        errlist: *mut *mut NvListRaw,
    ) -> c_int;
    fn lzc_clone(fsname: *const c_char, origin: *const c_char, props: *mut NvListRaw) -> c_int;
    fn lzc_promote(fsname: *const c_char, snapnamebuf: *mut c_char, snapnamelen: c_int) -> c_int;
}

#[link(name = "nvpair")]
unsafe extern "C" {
    fn fnvlist_alloc() -> *mut NvListRaw;
    fn fnvlist_free(nvl: *mut NvListRaw);
    fn fnvlist_add_boolean(nvl: *mut NvListRaw, name: *const c_char);
    fn fnvlist_add_string(nvl: *mut NvListRaw, name: *const c_char, value: *const c_char);
    fn fnvlist_add_uint64(nvl: *mut NvListRaw, name: *const c_char, value: u64);
}

/// An owned nvlist, freed on drop.
struct NvList(*mut NvListRaw);

fn c_string(text: &str) -> Result<CString, ZfsError> {
    CString::new(text).map_err(|_| ZfsError::Lzc {
        call: "nvlist",
        source: io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a ZFS name"),
    })
}

impl NvList {
    fn new() -> Self {
        // SAFETY: fnvlist_alloc takes nothing and aborts rather than return NULL.
        Self(unsafe { fnvlist_alloc() })
    }

    fn add_boolean(&mut self, name: &str) -> Result<(), ZfsError> {
        let name = c_string(name)?;
        // SAFETY: self.0 is a live nvlist we own; the name is NUL-terminated and copied.
        unsafe { fnvlist_add_boolean(self.0, name.as_ptr()) };
        Ok(())
    }

    fn add_string(&mut self, name: &str, value: &str) -> Result<(), ZfsError> {
        let (name, value) = (c_string(name)?, c_string(value)?);
        // SAFETY: self.0 is a live nvlist we own; both strings are NUL-terminated and copied.
        unsafe { fnvlist_add_string(self.0, name.as_ptr(), value.as_ptr()) };
        Ok(())
    }

    fn add_uint64(&mut self, name: &str, value: u64) -> Result<(), ZfsError> {
        let name = c_string(name)?;
        // SAFETY: self.0 is a live nvlist we own; the name is NUL-terminated and copied.
        unsafe { fnvlist_add_uint64(self.0, name.as_ptr(), value) };
        Ok(())
    }
}

impl Drop for NvList {
    fn drop(&mut self) {
        // SAFETY: self.0 came from fnvlist_alloc (or libzfs_core) and is freed once, here.
        unsafe { fnvlist_free(self.0) };
    }
}

fn check(call: &'static str, rc: c_int) -> Result<(), ZfsError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(ZfsError::Lzc {
            call,
            source: io::Error::from_raw_os_error(rc),
        })
    }
}

/// ZFS through libzfs_core, with the `zfs` command for the rest.
#[derive(Debug)]
pub struct LzcZfs {
    command: CommandZfs,
}

impl LzcZfs {
    /// Opens libzfs_core (the `/dev/zfs` device).
    ///
    /// # Errors
    /// No ZFS on this host (`/dev/zfs` missing: a "not found" error), or no permission.
    pub fn open() -> Result<Self, ZfsError> {
        // SAFETY: libzfs_core_init takes nothing; it is reference-counted and balanced by
        // the libzfs_core_fini in Drop, which runs only when this succeeded.
        check("libzfs_core_init", unsafe { libzfs_core_init() })?;
        Ok(Self {
            command: CommandZfs,
        })
    }

    fn clone_dataset(&self, op: &ZfsOp<'_>) -> Result<String, ZfsError> {
        let ZfsOp::Clone {
            origin,
            dataset,
            mountpoint,
            quota_mb,
            props,
        } = *op
        else {
            return self.command.zfs(op);
        };
        // A volume's clone carries `volmode`, an index property that libzfs_core takes only
        // as its number; the command takes its name.
        if mountpoint.is_none() {
            return self.command.zfs(op);
        }
        let mut list = NvList::new();
        if let Some(mountpoint) = mountpoint {
            list.add_string("mountpoint", &mountpoint.to_string_lossy())?;
        }
        if let Some(quota) = quota_mb.filter(|mb| *mb > 0) {
            list.add_uint64("quota", u64::from(quota) << 20)?;
        }
        for (key, value) in props {
            list.add_string(key, value)?;
        }
        let (name, origin) = (c_string(dataset.as_str())?, c_string(origin)?);
        // SAFETY: both names are NUL-terminated and outlive the call; the nvlist is live and
        // only read.
        check("lzc_clone", unsafe {
            lzc_clone(name.as_ptr(), origin.as_ptr(), list.0)
        })?;
        // lzc_clone creates a filesystem without mounting it, as `zfs clone` would; a
        // volume's clone is a device, with nothing to mount.
        match mountpoint {
            Some(_) => self.command.mount(dataset.as_str()),
            None => Ok(String::new()),
        }
    }

    fn snapshot(name: &str) -> Result<String, ZfsError> {
        let mut snaps = NvList::new();
        snaps.add_boolean(name)?;
        let mut errors: *mut NvListRaw = std::ptr::null_mut();
        // SAFETY: `snaps` is live and only read; `errors` is a valid out-pointer that
        // libzfs_core sets to NULL or to an nvlist we then own.
        let rc = unsafe { lzc_snapshot(snaps.0, std::ptr::null_mut(), &raw mut errors) };
        if !errors.is_null() {
            drop(NvList(errors));
        }
        check("lzc_snapshot", rc).map(|()| String::new())
    }

    fn promote(dataset: &str) -> Result<String, ZfsError> {
        let name = c_string(dataset)?;
        let mut conflict = [0 as c_char; 256];
        let len = c_int::try_from(conflict.len()).unwrap_or(c_int::MAX);
        // SAFETY: the name is NUL-terminated; `conflict` is a writable buffer of `len` bytes
        // that libzfs_core fills with a NUL-terminated snapshot name on EEXIST.
        check("lzc_promote", unsafe {
            lzc_promote(name.as_ptr(), conflict.as_mut_ptr(), len)
        })
        .map(|()| String::new())
    }
}

impl Drop for LzcZfs {
    fn drop(&mut self) {
        // SAFETY: balances the successful libzfs_core_init of `open`.
        unsafe { libzfs_core_fini() };
    }
}

impl ZfsSys for LzcZfs {
    fn zfs(&self, op: &ZfsOp<'_>) -> Result<String, ZfsError> {
        match *op {
            ZfsOp::Clone { .. } => self.clone_dataset(op),
            ZfsOp::Snapshot { name } => Self::snapshot(name),
            ZfsOp::Promote { dataset } => Self::promote(dataset.as_str()),
            ZfsOp::Exists { .. }
            | ZfsOp::List { .. }
            | ZfsOp::Create { .. }
            | ZfsOp::Destroy { .. } => self.command.zfs(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Runs against the real libzfs_core: on a host without ZFS (no `/dev/zfs`, as on the CI
    /// machines) opening it must fail as "not found"; where ZFS exists it must open.
    #[test]
    fn test_opening_libzfs_core_matches_the_host() {
        let opened = LzcZfs::open();
        if Path::new("/dev/zfs").exists() {
            assert!(opened.is_ok(), "{opened:?}");
        } else {
            let error = opened.unwrap_err();
            assert!(error.is_missing(), "{error}");
            assert!(
                error.to_string().starts_with("libzfs_core_init failed"),
                "{error}"
            );
        }
    }

    #[test]
    fn test_a_nul_in_a_name_is_refused_before_any_call() {
        let error = LzcZfs::snapshot("zroot/a\0b@s").unwrap_err();
        assert!(
            matches!(&error, ZfsError::Lzc { call: "nvlist", source } if source.kind() == io::ErrorKind::InvalidInput),
            "{error}"
        );
    }
}
