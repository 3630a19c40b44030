//! Server names and the small integer ids the kernel carries.

use std::collections::HashMap;

#[derive(Default)]
pub struct Servers {
    by_name: HashMap<String, u32>,
    names: Vec<String>,
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
        self.names.push(name.to_owned());
        let id = self.names.len() as u32;
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// The ids a previous agent gave, in order (id 1 first): the kernel's
    /// kept maps and queued records carry them.
    pub fn from_names(names: &[String]) -> Self {
        let mut s = Self::default();
        for n in names {
            s.names.push(n.clone());
            s.by_name.entry(n.clone()).or_insert(s.names.len() as u32);
        }
        s
    }

    /// Every name, by id (id 1 first).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        id.checked_sub(1)
            .and_then(|i| self.names.get(i as usize))
            .map(String::as_str)
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
        let again = Servers::from_names(s.names());
        assert_eq!((again.name(1), again.name(2)), (Some("fs"), Some("git")));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("@modelcontextprotocol/server-filesystem").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name("a b"), Err(NameError::BadChar(_))));
    }
}
