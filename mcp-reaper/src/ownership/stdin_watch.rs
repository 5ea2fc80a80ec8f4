//! Release wakes through pidfds: per tree, the root's pidfd (readable once
//! the root exits) and a `pidfd_getfd` duplicate of the root's stdin
//! (HUP / RDHUP once the far end goes), both in tokio's epoll; for a tree
//! behind a relay chain also each hop's stdin and lineage fds, whose
//! hang-up means the host let go upstream. Used by the pidfd tier, and by
//! the eBPF tier when its close tier is not attached.
//!
//! Owns: opening and closing those fds, and telling the daemon which tree
//! to re-check. A wake is only a hint: ownership is still confirmed by
//! sock_diag and /proc (shutdown() without close raises RDHUP too).
//! Must never: read from, write to or change the flags of a duplicate
//! (it shares the holder's open file description, so a read would steal
//! the holder's input and O_NONBLOCK would change its reads), or keep it
//! once its holder has exited or the tree is forgotten (while the daemon
//! holds a pipe's read end, the host's writes to a dead server do not
//! fail).

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use tokio::{
    io::{Interest, Ready, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::debug;

use crate::{procs::identity::ProcKey, procs::procscan};

/// Why a tree should be re-checked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The far end of the root's stdin hung up (or was shut down).
    StdinClosed(ProcKey),
    /// The root exited (its pidfd became readable).
    RootExited(ProcKey),
}

impl Wake {
    pub fn root(self) -> ProcKey {
        match self {
            Self::StdinClosed(k) | Self::RootExited(k) => k,
        }
    }
}

/// What one readiness report on the stdin duplicate means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinSeen {
    /// The far end hung up (pipe HUP) or shut down / closed (socket RDHUP).
    Closed,
    /// Only data for the server: clear readiness and wait again.
    Data,
}

/// Classifies a readiness report without reading anything.
pub fn classify(ready: Ready) -> StdinSeen {
    if ready.is_read_closed() {
        StdinSeen::Closed
    } else {
        StdinSeen::Data
    }
}

/// Roots to start watching and roots to stop watching, given the watched
/// set and the trees the supervisor knows now.
pub fn plan(
    watched: &HashSet<ProcKey>,
    wanted: impl IntoIterator<Item = ProcKey>,
) -> (Vec<ProcKey>, Vec<ProcKey>) {
    let wanted: HashSet<ProcKey> = wanted.into_iter().collect();
    let mut add: Vec<ProcKey> = wanted.difference(watched).copied().collect();
    let mut remove: Vec<ProcKey> = watched.difference(&wanted).copied().collect();
    add.sort();
    remove.sort();
    (add, remove)
}

// Whether the watches can run here: `pidfd_getfd` works and may take
// other processes' descriptors. The check itself is the capability layer's.
pub use crate::procs::caps::probe_pidfd_getfd as probe;

/// A verified pidfd for `key`: opened first, start time checked after.
fn open_pidfd(proc_root: &Path, key: ProcKey) -> std::io::Result<OwnedFd> {
    let pid = i32::try_from(key.tgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    if procscan::read_key(proc_root, key.tgid) != Some(key) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "PID reused: start time differs after pidfd_open",
        ));
    }
    Ok(fd)
}

/// A descriptor of a relay hop whose hang-up may end a tree's session:
/// (the hop, its fd number).
pub type Link = (ProcKey, u32);

/// One tree's watches: the links they were opened for, and their tasks.
struct Watched {
    links: Vec<Link>,
    tasks: Vec<JoinHandle<()>>,
}

/// The watches of every tree, small tasks each.
pub struct StdinWatch {
    tx: mpsc::UnboundedSender<Wake>,
    /// Every root tried, watched or not (a failed open is not retried; the
    /// poll source's reconcile covers that tree).
    tasks: HashMap<ProcKey, Watched>,
    /// Whether a root's exit is reported (`Wake::RootExited`).
    root_exit_wakes: bool,
}

impl StdinWatch {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Wake>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                tasks: HashMap::new(),
                root_exit_wakes: true,
            },
            rx,
        )
    }

    /// Roots' exits still close their duplicates but wake nobody: for a
    /// source that reports exits itself, in order with the forks before
    /// them (the eBPF tier). A pidfd can be faster than that source, and a
    /// check on it could judge a tree before a child forked just before the
    /// exit (a double-forking launcher's server) is known.
    pub fn without_root_exit_wakes(mut self) -> Self {
        self.root_exit_wakes = false;
        self
    }

    /// Roots tried so far (watched, or whose watch could not be opened).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Watches the trees in `roots` and drops the watches of every other.
    /// Must run inside a tokio runtime with I/O enabled.
    pub fn sync(&mut self, roots: impl IntoIterator<Item = ProcKey>, proc_root: &Path) {
        self.sync_links(roots.into_iter().map(|r| (r, Vec::new())), proc_root);
    }

    /// As `sync`, and per tree the links of its relay chain: a hang-up of
    /// any of them wakes the tree as its stdin's would. A tree whose links
    /// changed is watched afresh.
    pub fn sync_links(
        &mut self,
        targets: impl IntoIterator<Item = (ProcKey, Vec<Link>)>,
        proc_root: &Path,
    ) {
        let mut wanted: HashMap<ProcKey, Vec<Link>> = targets.into_iter().collect();
        for links in wanted.values_mut() {
            links.sort();
            links.dedup();
        }
        // A tree whose links changed counts as not watched yet.
        let watched: HashSet<ProcKey> = self
            .tasks
            .iter()
            .filter(|(root, w)| wanted.get(root).is_none_or(|l| *l == w.links))
            .map(|(root, _)| *root)
            .collect();
        let stale: Vec<ProcKey> = self
            .tasks
            .keys()
            .filter(|r| !watched.contains(r))
            .copied()
            .collect();
        for root in stale {
            self.unwatch(root);
        }
        let (add, remove) = plan(&watched, wanted.keys().copied());
        for root in remove {
            self.unwatch(root);
        }
        for root in add {
            let links = wanted.remove(&root).unwrap_or_default();
            let mut tasks = Vec::new();
            match self.watch(root, proc_root) {
                Ok(t) => tasks.push(t),
                Err(e) => debug!(%root, "no pidfd watch: {e}"),
            }
            for &(hop, fd) in &links {
                match self.watch_link(root, hop, fd, proc_root) {
                    Ok(t) => tasks.push(t),
                    Err(e) => debug!(%root, %hop, fd, "no link watch: {e}"),
                }
            }
            self.tasks.insert(root, Watched { links, tasks });
        }
    }

    /// Stops watching `root`, closing its pidfds and duplicates.
    pub fn unwatch(&mut self, root: ProcKey) {
        if let Some(w) = self.tasks.remove(&root) {
            for task in w.tasks {
                task.abort();
            }
        }
    }

    fn watch(&self, root: ProcKey, proc_root: &Path) -> std::io::Result<JoinHandle<()>> {
        let pidfd = open_pidfd(proc_root, root)?;
        let pidfd = register(pidfd)?;
        // No stdin duplicate (closed stdin, no ptrace access) or one epoll
        // refuses (a regular file, /dev/null): the pidfd still reports exit.
        let stdin = rustix::process::pidfd_getfd(
            pidfd.get_ref().as_fd(),
            0,
            rustix::process::PidfdGetfdFlags::empty(),
        )
        .map_err(|e| debug!(%root, "no stdin duplicate: {e}"))
        .ok()
        .and_then(|fd| register(fd).ok());
        Ok(tokio::spawn(run(
            root,
            pidfd,
            stdin,
            self.tx.clone(),
            self.root_exit_wakes,
        )))
    }

    /// A relay hop's descriptor: its hang-up wakes `root`; the hop's exit
    /// only closes the duplicate (the kernel or the reconcile reports it).
    fn watch_link(
        &self,
        root: ProcKey,
        hop: ProcKey,
        fd: u32,
        proc_root: &Path,
    ) -> std::io::Result<JoinHandle<()>> {
        let pidfd = register(open_pidfd(proc_root, hop)?)?;
        let fd = i32::try_from(fd)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let dup = rustix::process::pidfd_getfd(
            pidfd.get_ref().as_fd(),
            fd,
            rustix::process::PidfdGetfdFlags::empty(),
        )?;
        let dup = register(dup)?;
        Ok(tokio::spawn(run(
            root,
            pidfd,
            Some(dup),
            self.tx.clone(),
            false,
        )))
    }
}

/// `fd` in tokio's epoll, for reading readiness only.
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open while the AsyncFd owns it and always
    // returns the same descriptor from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(Into::into)
}

impl Drop for StdinWatch {
    fn drop(&mut self) {
        for task in self.tasks.drain().flat_map(|(_, w)| w.tasks) {
            task.abort();
        }
    }
}

/// Waits on one holder's pidfd and its duplicate. `exit_wakes`: the
/// holder's exit is reported as the root's (`Wake::RootExited`).
async fn run(
    root: ProcKey,
    pidfd: AsyncFd<OwnedFd>,
    mut stdin: Option<AsyncFd<OwnedFd>>,
    tx: mpsc::UnboundedSender<Wake>,
    exit_wakes: bool,
) {
    loop {
        tokio::select! {
            // Exit first: the duplicate must not outlive its holder.
            biased;
            _ = pidfd.readable() => {
                drop(stdin.take());
                if exit_wakes {
                    let _ = tx.send(Wake::RootExited(root));
                }
                return;
            }
            guard = async { stdin.as_ref()?.readable().await.ok() }, if stdin.is_some() => {
                let Some(mut guard) = guard else {
                    stdin = None;
                    continue;
                };
                let seen = classify(guard.ready());
                // Edge-triggered: clear and wait for the next change. Data
                // stays queued for the server.
                guard.clear_ready();
                if seen == StdinSeen::Closed {
                    // tokio keeps a closed read side ready for good, so
                    // there is no next edge to wait for: report once and
                    // close the duplicate. A later full close after a
                    // shutdown() is the poll reconcile's (and the root's
                    // exit still wakes).
                    drop(stdin.take());
                    let _ = tx.send(Wake::StdinClosed(root));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{
        io::{Read, Write},
        process::{Command, Stdio},
        time::Duration,
    };

    use super::*;

    fn key(pid: u32) -> ProcKey {
        ProcKey::new(pid, 1)
    }

    #[test]
    fn plan_adds_new_roots_and_drops_forgotten_ones() {
        let watched: HashSet<ProcKey> = [key(1), key(2), key(3)].into_iter().collect();
        let (add, remove) = plan(&watched, [key(2), key(4), key(3), key(5)]);
        assert_eq!(add, vec![key(4), key(5)]);
        assert_eq!(remove, vec![key(1)]);
        let (add, remove) = plan(&HashSet::new(), []);
        assert!(add.is_empty() && remove.is_empty());
    }

    #[test]
    fn only_a_closed_read_side_counts_as_closed() {
        assert_eq!(classify(Ready::READABLE), StdinSeen::Data);
        assert_eq!(classify(Ready::READABLE | Ready::WRITABLE), StdinSeen::Data);
        assert_eq!(classify(Ready::READ_CLOSED), StdinSeen::Closed);
        assert_eq!(
            classify(Ready::READABLE | Ready::READ_CLOSED),
            StdinSeen::Closed
        );
        assert_eq!(classify(Ready::WRITE_CLOSED), StdinSeen::Data);
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Wake>) -> Wake {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a wake in time")
            .expect("the channel is open")
    }

    fn spawn(stdin: Stdio) -> (std::process::Child, ProcKey) {
        let child = Command::new("sleep")
            .arg("30")
            .stdin(stdin)
            .spawn()
            .unwrap();
        let root = procscan::read_key(Path::new("/proc"), child.id()).unwrap();
        (child, root)
    }

    /// A pipe: data is no close, the writer's close wakes StdinClosed, the
    /// root's exit wakes RootExited, forgetting the tree closes the watch.
    #[tokio::test]
    async fn pipe_hangup_and_root_exit_wake() {
        let (mut child, root) = spawn(Stdio::piped());
        let (mut w, mut rx) = StdinWatch::new();
        w.sync([root], Path::new("/proc"));
        assert_eq!(w.len(), 1);
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"hello").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "data is not a close");
        drop(input);
        assert_eq!(next(&mut rx).await, Wake::StdinClosed(root));
        child.kill().unwrap();
        assert_eq!(next(&mut rx).await, Wake::RootExited(root));
        let _ = child.wait();
        w.sync([], Path::new("/proc"));
        assert!(w.is_empty());
    }

    /// The root exits while the host still holds the pipe: the duplicate
    /// is closed with the exit, so the host's writes fail (EPIPE).
    #[tokio::test]
    async fn root_exit_closes_the_duplicate() {
        let (mut child, root) = spawn(Stdio::piped());
        let link = stdin_of(&child);
        let (mut w, mut rx) = StdinWatch::new();
        w.sync([root], Path::new("/proc"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(holds(&link));
        let mut input = child.stdin.take().unwrap();
        child.kill().unwrap();
        assert_eq!(next(&mut rx).await, Wake::RootExited(root));
        assert!(!holds(&link), "no duplicate after the root's exit");
        let err = input.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        let _ = child.wait();
        w.sync([], Path::new("/proc"));
        assert!(w.is_empty());
    }

    /// Without root-exit wakes (the eBPF tier), a root's exit wakes nobody
    /// but still closes its duplicate at once.
    #[tokio::test]
    async fn without_root_exit_wakes_an_exit_only_closes_the_duplicate() {
        let (mut child, root) = spawn(Stdio::piped());
        let link = stdin_of(&child);
        let (w, mut rx) = StdinWatch::new();
        let mut w = w.without_root_exit_wakes();
        w.sync([root], Path::new("/proc"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(holds(&link));
        let _input = child.stdin.take().unwrap();
        child.kill().unwrap();
        let _ = child.wait();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!holds(&link), "no duplicate after the root's exit");
        assert!(rx.try_recv().is_err(), "an exit is no wake here");
        w.sync([], Path::new("/proc"));
        assert!(w.is_empty());
    }

    /// Whether this process holds a readable fd to the same file as `link`
    /// (a pipe's write end, also ours, does not count).
    fn holds(link: &std::path::Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).ok().as_deref() == Some(link))
            .any(|e| {
                let info = std::fs::read_to_string(format!(
                    "/proc/self/fdinfo/{}",
                    e.file_name().to_string_lossy()
                ))
                .unwrap_or_default();
                info.lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                    .is_some_and(|f| f & 3 != 1) // not O_WRONLY
            })
    }

    fn stdin_of(child: &std::process::Child) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/{}/fd/0", child.id())).unwrap()
    }

    /// A relay hop's link: its hang-up wakes the tree it was given for;
    /// the hop's exit closes the duplicate without a wake; the root's own
    /// watch is unaffected, and a change of links re-opens the watches.
    #[tokio::test]
    async fn a_relay_hops_hangup_wakes_its_tree_and_its_exit_does_not() {
        let (mut root_child, root) = spawn(Stdio::piped());
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut hop_child, hop) = spawn(Stdio::from(OwnedFd::from(theirs)));
        let link = stdin_of(&hop_child);
        let (mut w, mut rx) = StdinWatch::new();
        w.sync_links([(root, vec![(hop, 0)])], Path::new("/proc"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(holds(&link), "the hop's link is duplicated");
        drop(ours);
        assert_eq!(next(&mut rx).await, Wake::StdinClosed(root));
        assert!(!holds(&link), "closed after the hangup");

        // Links changed (none now, then a live hop again): watched afresh.
        let (_ours2, theirs2) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut hop2_child, hop2) = spawn(Stdio::from(OwnedFd::from(theirs2)));
        let link2 = stdin_of(&hop2_child);
        w.sync_links([(root, vec![(hop2, 0)])], Path::new("/proc"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(holds(&link2));
        hop2_child.kill().unwrap();
        let _ = hop2_child.wait();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!holds(&link2), "the hop's exit closes its duplicate");
        assert!(rx.try_recv().is_err(), "a hop's exit is no wake");
        // The root's own watch still reports its exit.
        root_child.kill().unwrap();
        assert_eq!(next(&mut rx).await, Wake::RootExited(root));
        let _ = root_child.wait();
        hop_child.kill().unwrap();
        let _ = hop_child.wait();
        w.sync_links([], Path::new("/proc"));
        assert!(w.is_empty());
    }

    /// A socket: shutdown() raises RDHUP (a hint; the recheck decides),
    /// reported once; the duplicate is closed then, and the root's exit
    /// still wakes.
    #[tokio::test]
    async fn socket_shutdown_wakes_once_and_closes_the_duplicate() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut child, root) = spawn(Stdio::from(OwnedFd::from(theirs)));
        let (mut w, mut rx) = StdinWatch::new();
        w.sync([root], Path::new("/proc"));
        let link = stdin_of(&child);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(holds(&link), "the duplicate is open while the far end is");
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(next(&mut rx).await, Wake::StdinClosed(root));
        assert!(!holds(&link), "the duplicate is closed after the hangup");
        drop(ours);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err());
        child.kill().unwrap();
        assert_eq!(next(&mut rx).await, Wake::RootExited(root));
        let _ = child.wait();
    }

    /// Nothing is read from the duplicate: the server gets all its input.
    #[tokio::test]
    async fn the_server_keeps_its_input() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let root = procscan::read_key(Path::new("/proc"), child.id()).unwrap();
        let (mut w, _rx) = StdinWatch::new();
        w.sync([root], Path::new("/proc"));
        let mut input = child.stdin.take().unwrap();
        for _ in 0..50 {
            input.write_all(b"0123456789").unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(input);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "0123456789".repeat(50));
        let _ = child.wait();
    }
}
