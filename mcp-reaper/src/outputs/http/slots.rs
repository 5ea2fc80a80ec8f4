//! Connection slots: how many connections the endpoint serves at once, in
//! all and per client.
//!
//! Owns: the counts, taking a slot at accept and giving it back when the
//! connection ends (on drop, whatever ended it).
//! Must never: let one client hold more than its share (a local user
//! opening idle connections cannot lock out Prometheus or the probes), or
//! keep an entry for a client with no connection (the table is bounded by
//! the total).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use super::peer::Client;

/// Why a connection was not given a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Every slot is taken.
    Full,
    /// This client holds its share already.
    ClientAtLimit,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "every connection slot is taken",
            Self::ClientAtLimit => "the client holds its share of connection slots",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// The slot table. Clones share it.
#[derive(Clone, Debug)]
pub(super) struct Slots {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_client: usize,
}

/// A slot held by one connection; dropping it gives the slot back.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Slots,
    client: Client,
}

impl Slots {
    pub(super) fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            counts: Arc::new(Mutex::new(Counts::default())),
            max_total,
            max_per_client,
        }
    }

    /// A slot for `client`, unless the table or the client's share is full.
    pub(super) fn take(&self, client: Client) -> Result<Slot, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(Refused::Full);
        }
        let held = c.by_client.entry(client).or_insert(0);
        if *held >= self.max_per_client {
            return Err(Refused::ClientAtLimit);
        }
        *held += 1;
        c.total += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(held) = c.by_client.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                c.by_client.remove(&self.client);
            }
        }
    }
}
