//! Reaping one MCP tree.
//!
//! Owns: killing the members of one tree, completely: a pidfd for every
//! member, checked against the member's start time after it is opened;
//! SIGSTOP so nothing forks during the kill; members born meanwhile picked
//! up from a `MemberSource`; SIGTERM + SIGCONT, a grace period, SIGKILL for
//! what is left, and waiting for exits on the pidfds. Reports what happened
//! to every member, and why anything was left alone.
//!
//! May kill: only processes named by a key in the plan or returned by the
//! member source, and only through a pidfd whose process was verified to
//! still have that key's start time.
//!
//! Must never: signal a bare PID (no kill(2); every signal goes through a
//! verified pidfd); signal PID 1, the reaper's own process or its ancestors,
//! an ancestor of the tree's root, a process on the plan's `never` list
//! (the host, relays), a process the `protect` callback names, or a
//! process that started before the tree's root (a reused PID cannot be a
//! descendant); retry an unkillable member
//! (D state) without bound; act at all in a dry run.
//!
//! Layout, lowest first (each file uses only those above it in this list):
//! - `plan`: the plan, the report and the outcome (plain data).
//! - `guard`: the never-touch checks every key passes before it is opened.
//! - `members`: where members born after the plan are found.
//! - `run`: pidfds opened and verified, signals sent, exits awaited.
//! - `sequence`: `reap`, the order of the steps.

mod guard;
mod members;
mod plan;
mod run;
mod sequence;

pub use guard::{
    Guard, WHY_ANCESTOR, WHY_INIT, WHY_NEVER, WHY_NO_FDS, WHY_NOT_PROCESS, WHY_OLDER_THAN_ROOT,
    WHY_OPEN_FAILED, WHY_PID_ZERO, WHY_PROTECTED, WHY_REUSED, WHY_ROOT_ANCESTOR, WHY_SELF,
    WHY_UNREADABLE, refusal,
};
pub use members::{MemberSource, ProcDescendants};
pub use plan::{DEFAULT_GRACE_KILL, MemberResult, Outcome, ReapPlan, ReapReport, classify};
pub use sequence::reap;
