//! Password hashing with Argon2id (PHC strings), on a bounded pool.
//!
//! Each Argon2 call takes about 19 MiB and tens of milliseconds of one
//! core, on purpose. Run on a thread per request, a few hundred parallel
//! sign-ins would take gigabytes. So every hash and every check goes
//! through one [`Hasher`]: a fixed set of threads (one per core, at most
//! [`MAX_THREADS`]) working through a short queue; a request that finds
//! the queue full is refused at once ([`Busy`], a `429`) instead of
//! waiting in memory. Each thread allocates Argon2's working memory once
//! and reuses it: a fresh 19 MiB allocation per hash leaves the allocator's
//! arenas holding on to several freed ones each (measured: 250 MiB after a
//! flood on two threads, against under 100 MiB reusing it).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// Most hashing threads, whatever the number of cores.
pub const MAX_THREADS: usize = 8;
/// Jobs that may wait for a thread, per thread.
pub const QUEUE_PER_THREAD: usize = 4;

/// The pool is full: try again in a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks in progress; try again shortly")]
pub struct Busy;

/// A job, given its thread's Argon2 memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Argon2's working memory, grown to the largest cost seen and kept.
#[derive(Default)]
struct Memory(Vec<Block>);

/// Stored hashes asking for more memory than this (KiB) are refused
/// rather than computed: ours use the default 19 MiB.
const MAX_M_COST: u32 = 64 * 1024;

/// The bounded Argon2 pool. Cheap to clone; the threads stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// One thread per core (at most [`MAX_THREADS`]) and a queue of
    /// [`QUEUE_PER_THREAD`] jobs per thread.
    pub fn for_this_machine() -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS);
        Self::new(threads, threads * QUEUE_PER_THREAD)
    }

    /// `threads` hashing at once, `queue` more waiting; beyond that [`Busy`].
    pub fn new(threads: usize, queue: usize) -> Self {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            // A thread that cannot start leaves the others to do the work;
            // with none at all every job is dropped and answered as busy.
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        Hasher { jobs }
    }

    /// Runs `f` on a hashing thread, or refuses when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The request may have gone away meanwhile: nobody to tell.
            let _ = tx.send(f(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// Hashes a password with a fresh salt: an Argon2id PHC string with
    /// the default parameters.
    pub async fn hash(&self, password: String) -> Result<anyhow::Result<String>, Busy> {
        self.run(move |memory| {
            hash_with(memory, password.as_bytes())
                .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
        })
        .await
    }

    /// Checks a password against a stored PHC string; false on any
    /// mismatch or malformed hash.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, Busy> {
        self.run(move |memory| verify_with(memory, password.as_bytes(), &phc).unwrap_or(false))
            .await
    }
}

/// Argon2 of `password` and `salt` into `out`, in `memory`.
fn argon2_into(
    memory: &mut Memory,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, Block::default());
    }
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory.0[..],
    )
}

/// What `argon2`'s `PasswordHasher` makes, in reused memory.
fn hash_with(memory: &mut Memory, password: &[u8]) -> argon2::password_hash::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let params = Params::default();
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
    let output = Output::init_with(len, |out| {
        argon2_into(
            memory,
            algorithm,
            version,
            params.clone(),
            password,
            salt_bytes,
            out,
        )
        .map_err(Into::into)
    })?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// What `argon2`'s `PasswordVerifier` does, in reused memory: the stored
/// hash's own algorithm, version and parameters; outputs compared in
/// constant time.
fn verify_with(
    memory: &mut Memory,
    password: &[u8],
    phc: &str,
) -> argon2::password_hash::Result<bool> {
    let hash = PasswordHash::new(phc)?;
    let algorithm = Algorithm::try_from(hash.algorithm)?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&hash)?;
    if params.m_cost() > MAX_M_COST {
        return Ok(false);
    }
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Ok(false);
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let got = Output::init_with(expected.len(), |out| {
        argon2_into(
            memory, algorithm, version, params, password, salt_bytes, out,
        )
        .map_err(Into::into)
    })?;
    Ok(got == expected)
}

/// A hashing thread: takes jobs until every sender is gone.
fn work(rx: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        // The lock is held only while waiting for the next job, so one
        // thread waits on the channel and the others on the lock.
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_what_the_argon2_crate_makes_and_checks() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = Memory::default();
        let ours = hash_with(&mut memory, b"correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert_eq!(
            verify_with(&mut memory, b"correct horse", &theirs),
            Ok(true)
        );
        assert_eq!(
            verify_with(&mut memory, b"correct hors", &theirs),
            Ok(false)
        );
        // Memory is allocated once, for the default cost.
        assert_eq!(memory.0.len(), 19 * 1024);
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$4A6XKqZr8pHXNlxNFx1dK/2YxS0y8VaWpIdkYFHqlvI";
        assert_eq!(verify_with(&mut memory, b"x", greedy), Ok(false));
        assert_eq!(memory.0.len(), 19 * 1024);
    }

    #[tokio::test]
    async fn passwords_round_trip() {
        let hasher = Hasher::new(1, 1);
        let phc = hasher
            .hash("correct horse".into())
            .await
            .expect("a thread")
            .expect("hash");
        assert!(hasher
            .verify("correct horse".into(), phc.clone())
            .await
            .expect("a thread"));
        assert!(!hasher
            .verify("wrong horse".into(), phc)
            .await
            .expect("a thread"));
        assert!(!hasher
            .verify("x".into(), "not a hash".into())
            .await
            .expect("a thread"));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = Hasher::new(1, 1);
        // Hold the one thread until told.
        let (release, held) = std::sync::mpsc::channel::<()>();
        hasher
            .jobs
            .try_send(Box::new(move |_| {
                let _ = held.recv();
            }))
            .map_err(|_| "queued")
            .expect("an empty queue");
        // Once the thread has taken it, the one queue slot takes a probe.
        while hasher.jobs.try_send(Box::new(|_| {})).is_err() {
            std::thread::yield_now();
        }
        // Thread busy, queue full: refused without waiting.
        assert_eq!(hasher.run(|_| ()).await, Err(Busy));
        release.send(()).expect("the job waits");
        // Once drained, jobs run again.
        let seven = loop {
            if let Ok(v) = hasher.run(|_| 7).await {
                break v;
            }
            std::thread::yield_now();
        };
        assert_eq!(seven, 7);
    }
}
