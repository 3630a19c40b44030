//! The kernel's set of watched processes (the `WATCHED` map: pid -> server
//! id and flags), behind a small trait so the decisions taken on it
//! (pipeline/discovery.rs) are unit-tested without root.

use agent_common::WatchedProc;
use aya::maps::{HashMap, MapData, MapError};

pub trait WatchSet {
    /// The entry of `pid`.
    fn state(&self, pid: u32) -> Option<WatchedProc>;
    fn watch(&mut self, pid: u32, w: WatchedProc) -> Result<(), MapError>;
    /// Whether an entry was there.
    fn unwatch(&mut self, pid: u32) -> bool;
    fn entries(&self) -> Vec<(u32, WatchedProc)>;
}

impl WatchSet for HashMap<MapData, u32, WatchedProc> {
    fn state(&self, pid: u32) -> Option<WatchedProc> {
        HashMap::get(self, &pid, 0).ok()
    }

    fn watch(&mut self, pid: u32, w: WatchedProc) -> Result<(), MapError> {
        HashMap::insert(self, pid, w, 0)
    }

    fn unwatch(&mut self, pid: u32) -> bool {
        HashMap::remove(self, &pid).is_ok()
    }

    fn entries(&self) -> Vec<(u32, WatchedProc)> {
        self.iter().flatten().collect()
    }
}

/// An in-memory watch set, for tests.
#[cfg(test)]
impl WatchSet for std::collections::BTreeMap<u32, WatchedProc> {
    fn state(&self, pid: u32) -> Option<WatchedProc> {
        std::collections::BTreeMap::get(self, &pid).copied()
    }

    fn watch(&mut self, pid: u32, w: WatchedProc) -> Result<(), MapError> {
        std::collections::BTreeMap::insert(self, pid, w);
        Ok(())
    }

    fn unwatch(&mut self, pid: u32) -> bool {
        std::collections::BTreeMap::remove(self, &pid).is_some()
    }

    fn entries(&self) -> Vec<(u32, WatchedProc)> {
        self.iter().map(|(p, w)| (*p, *w)).collect()
    }
}
