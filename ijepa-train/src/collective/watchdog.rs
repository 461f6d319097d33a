//! Bounds the time one collective may wait for the other ranks: a rank
//! left waiting longer (a peer died and the launcher did not end the job)
//! says so and exits, so a job never hangs forever.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

/// What the watchdog is waiting on.
enum Wait {
    Idle,
    On { since: Instant, what: &'static str },
    Closed,
}

struct WatchState {
    wait: Mutex<Wait>,
    wake: Condvar,
}

/// Ends the process when one collective has waited longer than `timeout`.
pub(crate) struct Watchdog {
    state: Arc<WatchState>,
}

impl Watchdog {
    pub(crate) fn start(rank: usize, timeout: Duration) -> Result<Self> {
        let state = Arc::new(WatchState {
            wait: Mutex::new(Wait::Idle),
            wake: Condvar::new(),
        });
        let watched = state.clone();
        std::thread::Builder::new()
            .name("ijepa-mpi-watchdog".into())
            .spawn(move || watch(&watched, rank, timeout))
            .map_err(|e| TrainError::Collective(format!("watchdog thread: {e}")))?;
        Ok(Self { state })
    }

    /// Runs `f` (one collective) under the watchdog.
    pub(crate) fn guard<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        self.set(Wait::On {
            since: Instant::now(),
            what,
        });
        let out = f();
        self.set(Wait::Idle);
        out
    }

    fn set(&self, wait: Wait) {
        let mut w = self.state.wait.lock().unwrap_or_else(|p| p.into_inner());
        *w = wait;
        self.state.wake.notify_one();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.set(Wait::Closed);
    }
}

fn watch(state: &WatchState, rank: usize, timeout: Duration) {
    let mut w = state.wait.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match *w {
            Wait::Closed => return,
            Wait::Idle => w = state.wake.wait(w).unwrap_or_else(|p| p.into_inner()),
            Wait::On { since, what } => {
                let waited = since.elapsed();
                if waited >= timeout {
                    super::say(&format!(
                        "error: rank {rank}: the {what} has waited {} s for the other processes of the job \
                         (IJEPA_MPI_TIMEOUT_S); one of them has stopped — see its error. Ending this process",
                        waited.as_secs()
                    ));
                    std::process::exit(1);
                }
                w = state
                    .wake
                    .wait_timeout(w, timeout - waited)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}
