//! The engine's git work runs on its own threads at a lower CPU priority (nice +10, Linux only), so
//! that under load — a storm of alerts on a small node — the threads that answer webhooks, the
//! admission review and the probes are scheduled first: an acknowledgement never waits for a
//! fetch or a trace to yield the core. The delivery journal's writes stay on tokio's own blocking
//! pool at normal priority (they are part of the acknowledgement).
//!
//! A second tokio runtime gives the threads: its blocking pool grows on demand (each git step
//! holds a thread while it runs) and shrinks when idle, like tokio's own.

use std::sync::OnceLock;

/// How much lower the engine's threads run (`nice` steps: +10 gives them about a tenth of a core
/// against a busy request thread, and all of it when the node is idle).
pub const NICENESS: i32 = 10;

/// Git steps at once at most (the engine's own bounds keep it far lower: one step per mirror).
const MAX_THREADS: usize = 64;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_THREADS)
            .thread_name("metricops-git")
            .on_thread_start(lower_priority)
            .build()
            .expect("the engine's git threads start")
    })
}

/// Runs `f` on a git thread; the handle is awaited from any runtime.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    runtime().spawn_blocking(f)
}

/// The calling thread's nice value raised by [`NICENESS`] (on Linux a thread has its own).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, no memory shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICENESS).min(19)) != 0 {
            tracing::debug!("the git threads run at normal priority: setpriority refused");
        }
    }
}

/// The nice value of the calling thread (for the test).
#[cfg(all(test, target_os = "linux"))]
fn own_niceness() -> i32 {
    // SAFETY: as above.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn git_steps_run_below_the_request_threads() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let here = own_niceness();
        let there = rt.block_on(spawn(own_niceness)).unwrap();
        assert_eq!(there, (here + NICENESS).min(19), "a git thread is niced");
        assert_eq!(own_niceness(), here, "the caller's priority is untouched");
        let again = rt.block_on(spawn(own_niceness)).unwrap();
        assert_eq!(again, there, "a reused thread is not lowered twice");
    }
}
