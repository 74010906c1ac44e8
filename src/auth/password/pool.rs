//! The bounded hashing pool: `pool_size` threads of its own and a queue of fixed length, so a
//! login flood gets [`PoolError::Busy`] at once instead of an ever longer wait (parent module).

use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{HashError, Hasher, Secret, Verification};

/// A job for a hashing thread; it answers its caller through a oneshot channel it holds.
type Job = Box<dyn FnOnce(&Hasher) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every thread is busy and the queue is full: answer 503 with `Retry-After`.
    #[error("password hashing is busy: the queue is full")]
    Busy,
    /// The hashing threads are gone, or one stopped before answering (a bug, logged by the
    /// panic hook).
    #[error("a password hashing thread stopped before answering")]
    Stopped,
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// Runs [`Hasher`] work off the async runtime, on threads of its own. Dropping the pool lets
/// its threads finish the queued jobs and exit.
#[derive(Debug)]
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// Starts `threads` hashing threads at the scheduling priority `nice` (0 to 19); at most
    /// `queue` jobs wait for one of them.
    pub fn new(
        hasher: Hasher,
        threads: NonZeroUsize,
        queue: usize,
        nice: u8,
    ) -> std::io::Result<Self> {
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let hasher = Arc::new(hasher);
        for index in 0..threads.get() {
            let receiver = Arc::clone(&receiver);
            let hasher = Arc::clone(&hasher);
            std::thread::Builder::new()
                .name(format!("wardgate-hash-{index}"))
                .spawn(move || {
                    lower_priority(nice);
                    work(&receiver, &hasher);
                })?;
        }
        Ok(Self { jobs })
    }

    /// [`Hasher::hash`] on the pool.
    pub async fn hash(&self, password: Secret) -> Result<String, PoolError> {
        let outcome = self.submit(move |hasher| hasher.hash(&password))?.await;
        Ok(outcome.map_err(|_| PoolError::Stopped)??)
    }

    /// [`Hasher::verify`] on the pool.
    pub async fn verify(&self, password: Secret, phc: String) -> Result<Verification, PoolError> {
        let outcome = self.submit(move |hasher| hasher.verify(&password, &phc))?;
        outcome.await.map_err(|_| PoolError::Stopped)
    }

    /// [`Hasher::dummy_verify`] on the pool: an unknown user waits in the same queue.
    pub async fn dummy_verify(&self, password: Secret) -> Result<Verification, PoolError> {
        let outcome = self.submit(move |hasher| hasher.dummy_verify(&password))?;
        outcome.await.map_err(|_| PoolError::Stopped)
    }

    /// Queues `work`, or refuses at once when the queue is full. Work whose caller has gone
    /// (a client that hung up) is skipped when its turn comes.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, PoolError> {
        let (reply, outcome) = oneshot::channel();
        let job: Job = Box::new(move |hasher| {
            if !reply.is_closed() {
                let _ = reply.send(work(hasher));
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(PoolError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(PoolError::Stopped),
        }
    }
}

/// One hashing thread: takes jobs until the pool is dropped.
/// Lowers the calling thread's priority to `nice`. On Linux the nice value belongs to each
/// thread, so only the hashing threads yield: under a login flood the proxy keeps its share of
/// the CPU and logins wait instead. Raising one's own nice value needs no privilege; should it
/// fail anyway, hashing runs at the normal priority and the failure is logged.
fn lower_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), i32::from(nice))
    {
        tracing::warn!(%error, nice, "cannot lower the priority of a password hashing thread");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn work(jobs: &Mutex<Receiver<Job>>, hasher: &Hasher) {
    loop {
        // The lock is held while waiting for a job, never while one runs.
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        // A panicking job drops its reply (its caller sees `Stopped`); the thread carries on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(hasher)));
    }
}

#[cfg(test)]
impl HashPool {
    /// Occupies one thread until the returned sender is used or dropped.
    pub(crate) fn hold_a_thread(&self) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<()>) {
        let (started, wait_started) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let held = self
            .submit(move |_| {
                let _ = started.send(());
                let _ = wait_release.recv();
            })
            .unwrap();
        wait_started.recv().unwrap();
        (release, held)
    }

    /// Makes a pool of one thread busy until the returned sender is used or dropped: the thread
    /// is held and the queue filled.
    pub(crate) fn saturate(&self) -> std::sync::mpsc::Sender<()> {
        let (release, _) = self.hold_a_thread();
        while self.submit(|_| ()).is_ok() {}
        release
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::auth::password::HashParams;

    const PASSWORD: &str = "Violet kettle, 9 drums!";

    fn secret() -> Secret {
        Secret::new(PASSWORD.to_owned())
    }

    fn pool(threads: usize, queue: usize) -> HashPool {
        let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
        HashPool::new(hasher, NonZeroUsize::new(threads).unwrap(), queue, 0).unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_at_the_configured_priority() {
        let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
        let pool = HashPool::new(hasher, NonZeroUsize::MIN, 1, 7).unwrap();
        let nice = pool
            .submit(|_| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nice, 7);
    }

    #[tokio::test]
    async fn hash_and_verify_run_on_the_pool() {
        let pool = pool(2, 4);
        let phc = pool.hash(secret()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            pool.verify(secret(), phc.clone()).await.unwrap(),
            Verification::Valid
        );
        assert_eq!(
            pool.verify(Secret::new("wrong".into()), phc).await.unwrap(),
            Verification::Invalid
        );
        assert_eq!(
            pool.dummy_verify(secret()).await.unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_recovers() {
        let pool = pool(1, 1);
        let (release, held) = pool.hold_a_thread();
        // The only thread is busy; this fills the queue of one.
        let queued = pool.submit(|hasher| hasher.hash(&secret())).unwrap();

        // Every further call is refused without waiting, whatever it asks for.
        for _ in 0..8 {
            assert!(matches!(pool.hash(secret()).await, Err(PoolError::Busy)));
        }
        assert!(matches!(
            pool.verify(secret(), String::new()).await,
            Err(PoolError::Busy)
        ));
        assert!(matches!(
            pool.dummy_verify(secret()).await,
            Err(PoolError::Busy)
        ));

        release.send(()).unwrap();
        held.await.unwrap();
        let phc = queued.await.unwrap().unwrap();
        assert_eq!(
            pool.verify(secret(), phc).await.unwrap(),
            Verification::Valid
        );
    }

    #[tokio::test]
    async fn work_whose_caller_has_gone_is_skipped() {
        let pool = pool(1, 2);
        let (release, held) = pool.hold_a_thread();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        drop(
            pool.submit(move |_| flag.store(true, Ordering::SeqCst))
                .unwrap(),
        );
        release.send(()).unwrap();
        held.await.unwrap();
        // One thread, first in first out: the abandoned job's turn came before this one's.
        pool.dummy_verify(secret()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_job_answers_stopped_and_the_thread_survives() {
        let pool = pool(1, 1);
        let outcome = pool.submit(|_| -> () { panic!("a bug") }).unwrap();
        assert!(outcome.await.is_err());
        assert_eq!(
            pool.dummy_verify(secret()).await.unwrap(),
            Verification::Invalid
        );
    }
}
