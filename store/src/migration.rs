//! Schema migrations: plain SQL files, applied once each, in order, never edited — a
//! checksum per applied migration catches an edit.

use sha2::{Digest, Sha256};

/// One schema migration.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL text.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}
