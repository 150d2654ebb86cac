//! A warm pool of network namespaces, refilled by a background thread, so that creating one
//! (the slowest namespace, with a long tail) happens off the sandbox create path.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crate::sys::NetnsSys;

/// Pause after a failed creation before the refill thread tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    ready: Vec<OwnedFd>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    target: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ready namespaces; dropping the pool stops its thread and frees them.
#[derive(Debug)]
pub(crate) struct NetnsPool {
    shared: Arc<Shared>,
}

impl NetnsPool {
    /// Starts a pool that keeps `target` namespaces ready.
    pub(crate) fn start(sys: Arc<dyn NetnsSys>, target: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: Vec::with_capacity(target),
                stopping: false,
            }),
            changed: Condvar::new(),
            target,
        });
        let refill = Arc::clone(&shared);
        let started = thread::Builder::new()
            .name("netns-pool".into())
            .spawn(move || refill_loop(&*sys, &refill));
        if let Err(error) = started {
            tracing::warn!(error = %error, "network namespace pool not started; sandboxes create their own");
        }
        Self { shared }
    }

    /// A ready namespace, if the pool has one; the refill thread replaces it.
    pub(crate) fn take(&self) -> Option<OwnedFd> {
        let taken = self.shared.state().ready.pop();
        self.shared.changed.notify_all();
        taken
    }

    /// How many namespaces are ready now.
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.shared.state().ready.len()
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.changed.notify_all();
    }
}

fn refill_loop(sys: &dyn NetnsSys, shared: &Shared) {
    loop {
        {
            let mut state = shared.state();
            while !state.stopping && state.ready.len() >= shared.target {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stopping {
                state.ready.clear();
                return;
            }
        }
        match sys.new_namespace() {
            Ok(namespace) => {
                shared.state().ready.push(namespace);
                shared.changed.notify_all();
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot create a network namespace for the pool");
                let state = shared.state();
                let _ = shared.changed.wait_timeout(state, RETRY_AFTER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sys::FakeNetnsSys;

    fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not reached");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn test_pool_fills_to_target_and_refills_after_take() {
        let sys = Arc::new(FakeNetnsSys::default());
        let pool = NetnsPool::start(sys.clone(), 3);
        wait_for(|| pool.ready() == 3);

        assert!(pool.take().is_some());

        wait_for(|| pool.ready() == 3);
        assert_eq!(sys.created(), 4);
    }

    #[test]
    fn test_pool_with_failing_sys_hands_out_nothing() {
        let sys = Arc::new(FakeNetnsSys::default());
        sys.fail();
        let pool = NetnsPool::start(sys, 2);
        assert!(pool.take().is_none());
    }
}
