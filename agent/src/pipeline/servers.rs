//! Server names and the small integer ids the kernel carries.
//!
//! A forgotten server's id is never given again: a late record of its
//! processes must not be taken for another server's.

use foldhash::HashMap;

#[derive(Default)]
pub struct Servers {
    by_name: HashMap<String, u32>,
    names: HashMap<u32, String>,
    /// The last id given.
    last: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("server name is empty")]
    Empty,
    #[error("server name is longer than 128 bytes")]
    TooLong,
    #[error("server name {0:?} has a character outside [A-Za-z0-9._@/:+-]")]
    BadChar(String),
}

/// Checks a server name: it ends up in JSON, metrics labels and file names.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 128 {
        return Err(NameError::TooLong);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._@/:+-".contains(c)) {
        return Err(NameError::BadChar(name.to_owned()));
    }
    Ok(())
}

impl Servers {
    /// Id of `name`, allocated on first use (ids start at 1; 0 means unwatched).
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        self.last += 1;
        let id = self.last;
        self.names.insert(id, name.to_owned());
        self.by_name.insert(name.to_owned(), id);
        id
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The ids a previous agent gave (`entries`) and the last id it gave:
    /// the kernel's kept maps and queued records carry them, and a forgotten
    /// id is not given again by this agent either.
    pub fn restore(entries: &[(u32, String)], last: u32) -> Self {
        let mut s = Self::default();
        for (id, n) in entries {
            s.names.insert(*id, n.clone());
            s.by_name.entry(n.clone()).or_insert(*id);
            s.last = s.last.max(*id);
        }
        s.last = s.last.max(last);
        s
    }

    /// Every (id, name) known, by id, and the last id given.
    pub fn entries(&self) -> (Vec<(u32, String)>, u32) {
        let mut v: Vec<(u32, String)> = self.names.iter().map(|(id, n)| (*id, n.clone())).collect();
        v.sort_unstable();
        (v, self.last)
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// Every (id, name) known.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(id, n)| (*id, n.as_str()))
    }

    /// Forgets a server (all its processes exited); returns its name.
    pub fn forget(&mut self, id: u32) -> Option<String> {
        let name = self.names.remove(&id)?;
        self.by_name.remove(&name);
        Some(name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_nonzero() {
        let mut s = Servers::default();
        assert_eq!(s.id("fs"), 1);
        assert_eq!(s.id("git"), 2);
        assert_eq!(s.id("fs"), 1);
        assert_eq!(s.name(2), Some("git"));
        assert_eq!(s.name(0), None);
        assert_eq!(s.forget(1).as_deref(), Some("fs"));
        assert_eq!(s.name(1), None);
        assert_eq!(s.id("fs"), 3, "a forgotten id is not given again");
        assert_eq!(s.len(), 2);
        let (entries, last) = s.entries();
        let again = Servers::restore(&entries, last);
        assert_eq!(
            (again.name(1), again.name(2), again.name(3)),
            (None, Some("git"), Some("fs"))
        );
        let mut again = again;
        assert_eq!(again.id("new"), 4, "ids given before the handover are not given again");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("@modelcontextprotocol/server-filesystem").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name("a b"), Err(NameError::BadChar(_))));
    }
}
