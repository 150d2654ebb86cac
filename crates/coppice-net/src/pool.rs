//! A warm pool of prepared items (network namespaces, or whole endpoints), refilled by a
//! background thread, so that making one (network namespaces have a long tail) happens off
//! the sandbox create path.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// Pause after a failed creation before the refill thread tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State<T> {
    ready: Vec<T>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    target: usize,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ready items; dropping the pool stops its thread and drops them.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + 'static> Pool<T> {
    /// Starts a pool that keeps `target` items made by `make` ready.
    pub(crate) fn start(
        name: &str,
        target: usize,
        make: impl Fn() -> io::Result<T> + Send + 'static,
    ) -> Self {
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
            .name(name.into())
            .spawn(move || refill_loop(&make, &refill));
        if let Err(error) = started {
            tracing::warn!(pool = name, error = %error, "pool not started; items are made on demand");
        }
        Self { shared }
    }

    /// A ready item, if the pool has one; the refill thread replaces it.
    pub(crate) fn take(&self) -> Option<T> {
        let taken = self.shared.state().ready.pop();
        self.shared.changed.notify_all();
        taken
    }

    /// How many items are ready now.
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.shared.state().ready.len()
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.changed.notify_all();
    }
}

fn refill_loop<T>(make: &dyn Fn() -> io::Result<T>, shared: &Shared<T>) {
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
        match make() {
            Ok(item) => {
                let mut state = shared.state();
                if state.stopping {
                    return;
                }
                state.ready.push(item);
                drop(state);
                shared.changed.notify_all();
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot prepare an item for the pool");
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
    use crate::sys::{FakeNetnsSys, NetnsSys};

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
        let maker = Arc::clone(&sys);
        let pool = Pool::start("test", 3, move || maker.new_namespace());
        wait_for(|| pool.ready() == 3);

        assert!(pool.take().is_some());

        wait_for(|| pool.ready() == 3);
        assert_eq!(sys.created(), 4);
    }

    #[test]
    fn test_pool_with_failing_maker_hands_out_nothing() {
        let sys = Arc::new(FakeNetnsSys::default());
        sys.fail();
        let pool = Pool::start("test", 2, move || sys.new_namespace());
        assert!(pool.take().is_none());
    }
}
