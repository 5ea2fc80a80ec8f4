//! What the kernel recorded at the exec of watched processes, for the
//! classification of a process that is gone before /proc is read.
//!
//! Owns: the `images` table (one entry per watched process whose exec
//! record carried its command line: a host's child, a candidate root, a
//! tree member) and its bounds: an entry goes one classification pass
//! after its process's exit, so a root that exits before its exec is
//! classified (a wrapper that exits on EOF, leaving children; a starved
//! daemon) is still placed, and its tree's remnants are still reaped.
//! Must never: stand in for a live process (/proc is read first, always),
//! keep an entry of a process that exited more than one pass ago, or fill
//! in anything the kernel did not record (exe, cgroup: unknown stays
//! unknown, and a protect rule that needs it fails closed).

use std::time::Instant;

use crate::{procs::identity::ProcKey, procs::procscan::ProcInfo, source::event::ExecImage};

use super::Supervisor;

/// A process as its exec record showed it: no exe, no memory figures; its
/// state says it is gone.
fn info_from_image(key: ProcKey, parent: ProcKey, comm: &str, image: &ExecImage) -> ProcInfo {
    ProcInfo {
        key,
        ppid: parent.tgid,
        pgid: 0,
        sid: 0,
        uid: image.uid,
        state: 'X',
        comm: comm.to_owned(),
        cmdline: image.cmdline.clone(),
        cmdline_truncated: image.truncated,
        exe: None,
        rss_bytes: 0,
        ns_pid: None,
    }
}

impl Supervisor {
    /// Queues `key` for classification, keeping what the kernel recorded
    /// of its new image (watched processes only).
    pub(super) fn queue_exec(
        &mut self,
        key: ProcKey,
        parent: ProcKey,
        comm: &str,
        image: Option<&ExecImage>,
    ) {
        self.pending.push((key, Instant::now()));
        if let Some(image) = image {
            self.images
                .insert(key, info_from_image(key, parent, comm, image));
        }
    }

    /// `key` exited: its image goes after the next classification pass
    /// (which may still need it for `key` or for a child's chain).
    pub(super) fn image_exited(&mut self, key: ProcKey) {
        if self.images.contains_key(&key) {
            self.images_exited.push(key);
        }
    }

    /// Details of `key` from /proc, else from its exec record when it is
    /// gone (`from_image` true), else `None`.
    pub(super) fn read_or_image(&self, key: ProcKey) -> Option<(ProcInfo, bool)> {
        match crate::procs::procscan::read_process(&self.proc_root, key.tgid) {
            Ok(info) if info.key == key => Some((info, false)),
            // Gone, or the PID names another process now.
            _ => self.images.get(&key).map(|i| (i.clone(), true)),
        }
    }

    /// Drops the images of processes that exited before this pass began.
    pub(super) fn drop_exited_images(&mut self, exited_before: usize) {
        let gone: Vec<ProcKey> = self.images_exited.drain(..exited_before).collect();
        for key in gone {
            self.images.remove(&key);
        }
    }
}
