//! A search handed to rayon's pool while the caller goes on with another one.
//!
//! A feed request runs two independent searches: the organic one and the ad one. On an idle
//! core the ad search costs no latency if it runs beside the organic one. On a busy machine no
//! core is idle, and a request must not wait for one: [`Offloaded::join`] runs the task on the
//! calling thread if no pool thread has started it yet, so the caller only ever waits for a
//! task that is already running elsewhere.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// A task that may run on rayon's pool or on the thread that joins it, whichever comes first.
pub struct Offloaded<T> {
    shared: Arc<Shared<T>>,
}

type Task<T> = Box<dyn FnOnce() -> T + Send>;

struct Shared<T> {
    state: Mutex<State<T>>,
    finished: Condvar,
}

enum State<T> {
    /// Not started: whoever comes first runs it.
    Waiting(Task<T>),
    /// Started on a pool thread.
    Running,
    Finished(Result<T, Box<dyn Any + Send>>),
    /// Run by the joiner, or abandoned.
    Taken,
}

impl<T: Send + 'static> Offloaded<T> {
    /// Queues `task` on rayon's global pool and returns at once.
    pub fn start(task: impl FnOnce() -> T + Send + 'static) -> Offloaded<T> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Waiting(Box::new(task))),
            finished: Condvar::new(),
        });
        let remote = Arc::clone(&shared);
        rayon::spawn(move || remote.run_if_waiting());
        Offloaded { shared }
    }

    /// The task's result: run here if no pool thread has started it, waited for if one has. A
    /// panic in the task resumes here.
    pub fn join(self) -> T {
        let mut state = self.shared.lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Waiting(task) => {
                    drop(state);
                    return task();
                }
                State::Finished(Ok(value)) => return value,
                State::Finished(Err(panic)) => resume_unwind(panic),
                State::Running => {
                    *state = State::Running;
                    state = self
                        .shared
                        .finished
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                State::Taken => unreachable!("an offloaded task is joined once"),
            }
        }
    }
}

impl<T> Drop for Offloaded<T> {
    /// A task nobody will join is not worth starting.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if matches!(*state, State::Waiting(_)) {
            *state = State::Taken;
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_if_waiting(&self) {
        let task = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Running) {
                State::Waiting(task) => task,
                other => {
                    *state = other;
                    return;
                }
            }
        };
        // Caught here, or rayon would abort the process; the joiner re-raises it.
        let result = catch_unwind(AssertUnwindSafe(task));
        *self.lock() = State::Finished(result);
        self.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// Taken by every test here: two tests filling the pool at once could each hold a thread
    /// the other waits for.
    static POOL: Mutex<()> = Mutex::new(());

    fn pool() -> MutexGuard<'static, ()> {
        POOL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps every pool thread busy until the returned flag is set.
    fn occupy_pool() -> Arc<AtomicBool> {
        let threads = rayon::current_num_threads();
        let release = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        for _ in 0..threads {
            let (release, busy) = (Arc::clone(&release), Arc::clone(&busy));
            rayon::spawn(move || {
                busy.fetch_add(1, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        while busy.load(Ordering::SeqCst) < threads {
            std::thread::yield_now();
        }
        release
    }

    #[test]
    fn join_returns_what_the_task_computed() {
        let _pool = pool();
        let values: Vec<u64> = (1..=100).collect();
        let task = Offloaded::start(move || values.iter().sum::<u64>());
        assert_eq!(task.join(), 5050);
    }

    #[test]
    fn the_caller_runs_the_task_when_no_pool_thread_is_free() {
        let _pool = pool();
        let release = occupy_pool();
        let caller = std::thread::current().id();
        let ran_on = Offloaded::start(|| std::thread::current().id()).join();
        release.store(true, Ordering::SeqCst);
        assert_eq!(ran_on, caller);
    }

    #[test]
    fn a_pool_thread_runs_the_task_when_one_is_free() {
        let _pool = pool();
        let caller = std::thread::current().id();
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let task = Offloaded::start(move || {
            flag.store(true, Ordering::SeqCst);
            std::thread::current().id()
        });
        // Joined only once a pool thread has taken it.
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_ne!(task.join(), caller);
    }

    #[test]
    fn a_panic_in_the_task_reaches_the_joiner() {
        let _pool = pool();
        for on_pool in [true, false] {
            let release = (!on_pool).then(occupy_pool);
            let task: Offloaded<u32> = Offloaded::start(|| panic!("the task failed"));
            if on_pool {
                while matches!(*task.shared.lock(), State::Waiting(_) | State::Running) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let caught = catch_unwind(AssertUnwindSafe(|| task.join())).unwrap_err();
            if let Some(release) = release {
                release.store(true, Ordering::SeqCst);
            }
            assert_eq!(caught.downcast_ref::<&str>(), Some(&"the task failed"));
        }
    }

    #[test]
    fn a_task_dropped_before_it_starts_never_runs() {
        let _pool = pool();
        let release = occupy_pool();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let task = Offloaded::start(move || flag.store(true, Ordering::SeqCst));
        let shared = Arc::clone(&task.shared);
        drop(task);
        assert!(matches!(*shared.lock(), State::Taken));
        release.store(true, Ordering::SeqCst);
        // Jobs queued from outside the pool are taken in order: once every pool thread is
        // inside one queued after it, the task's job has been taken and finished.
        let threads = rayon::current_num_threads();
        let all_in = Arc::new(std::sync::Barrier::new(threads + 1));
        for _ in 0..threads {
            let all_in = Arc::clone(&all_in);
            rayon::spawn(move || {
                all_in.wait();
            });
        }
        all_in.wait();
        assert!(matches!(*shared.lock(), State::Taken));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
