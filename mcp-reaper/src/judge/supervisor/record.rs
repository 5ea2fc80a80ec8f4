//! What the daemon knows of one MCP tree (`TreeRecord`) and what it asks
//! the daemon to do about one (`Action`).
//!
//! Owns: the record's fields and their meaning.
//! Must never: hold logic beyond construction: checks fill records in
//! (`check`), decisions read them (`schedule`).

use std::time::Instant;

use serde::Serialize;

use crate::{
    judge::policy::Decision,
    judge::trees::{OwnerFd, TreeState},
    ownership::FdHolder,
    procs::identity::ProcKey,
};

/// One MCP tree as the daemon knows it.
#[derive(Clone, Debug, Serialize)]
pub struct TreeRecord {
    pub root: ProcKey,
    pub server: String,
    pub host: Option<ProcKey>,
    /// Host rule name (bounded label).
    pub host_rule: String,
    pub session_id: Option<String>,
    pub owner_fds: Vec<OwnerFd>,
    /// The host side of a relay chain, owner first: the session's owner,
    /// then each relay or anchor hop down to the one holding the tree's
    /// stdio. Empty when the tree's stdio holder is no relay. Never part
    /// of a reap plan.
    pub chain: Vec<ProcKey>,
    /// The hop whose own upstream far end was released (the root itself
    /// when its stdin was released directly), while orphaned.
    pub released_link: Option<ProcKey>,
    /// Set by a host's `release`: the processes whose hold on the far end
    /// it covers. Every check re-confirms it (`judge_release`): it stands
    /// while nobody else holds the far end, and is withdrawn the moment
    /// another process outside the tree does.
    pub released_by: Vec<ProcKey>,
    pub state: TreeState,
    pub reason: Option<String>,
    /// When the current orphan reason was first confirmed.
    #[serde(skip)]
    pub orphan_since: Option<Instant>,
    /// Every process seen holding the far end while the tree was live.
    #[serde(skip)]
    pub owners_seen: Vec<FdHolder>,
    /// Inodes of the root's stdin and stdout (socket or pipe) at its last
    /// check: a host's close names one of them when it releases this tree.
    #[serde(skip)]
    pub stdio_inodes: Vec<u64>,
    /// A reap is under way.
    pub reaping: bool,
    /// The last decision reported (to log and audit each change once).
    pub last_decision: Option<Decision>,
}

impl TreeRecord {
    /// A tree just found (or restored), not checked yet.
    pub fn new(
        root: ProcKey,
        server: String,
        host: Option<ProcKey>,
        host_rule: String,
        session_id: Option<String>,
    ) -> Self {
        Self {
            root,
            server,
            host,
            host_rule,
            session_id,
            owner_fds: Vec::new(),
            chain: Vec::new(),
            released_link: None,
            released_by: Vec::new(),
            state: TreeState::Unknown,
            reason: Some("not checked yet".into()),
            orphan_since: None,
            owners_seen: Vec::new(),
            stdio_inodes: Vec::new(),
            reaping: false,
            last_decision: None,
        }
    }
}

/// What the daemon should do for one tree now.
#[derive(Clone, Debug)]
pub struct Action {
    pub root: ProcKey,
    pub decision: Decision,
    pub record: TreeRecord,
    /// Members at the moment of the decision (live, by lineage).
    pub members: Vec<ProcKey>,
}

/// How many entries each of the supervisor's tables holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    pub infos: usize,
    pub hosts: usize,
    pub relays: usize,
    pub trees: usize,
    pub pending: usize,
    /// Exec records of watched processes (`images`).
    pub images: usize,
    pub recheck: usize,
    pub idle_for: usize,
    pub activity: usize,
    pub starts: usize,
    pub watched: usize,
    pub reconcile_queue: usize,
    pub followups: usize,
    /// Waiting to be taken: owner hosts, detections, respawns, unwatches,
    /// gaps (each emptied by its `take_*`).
    pub outboxes: usize,
}
