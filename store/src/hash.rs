//! Integrity hashes: each event's hash covers its own fields and the hash of the previous
//! event of its stream, so changing, removing or reordering events of a stream breaks the
//! chain from that point on.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::RecordedEvent;

/// The "previous hash" of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The one text form of a recorded time: RFC 3339, UTC, nanoseconds.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The hash of `event` given the hash of the previous event of its stream. Ignores
/// `event.hash` and `event.position` (the position is covered by the log digest).
pub fn event_hash(prev_hash: &str, event: &RecordedEvent) -> String {
    let metadata = serde_json::to_string(&event.metadata).expect("metadata serializes");
    event_hash_of_text(prev_hash, event, &metadata, &format_time(&event.recorded_at))
}

/// [`event_hash`] with the event's metadata and time already in their text forms
/// (`serde_json::to_string(&event.metadata)`, [`format_time`]).
pub fn event_hash_of_text(prev_hash: &str, event: &RecordedEvent, metadata: &str, recorded_at: &str) -> String {
    let mut hasher = Sha256::new();
    for field in [
        prev_hash.as_bytes(),
        event.stream_id.as_bytes(),
        &event.version.to_le_bytes(),
        event.event_id.as_bytes(),
        event.event_type.as_bytes(),
        &event.schema_version.to_le_bytes(),
        recorded_at.as_bytes(),
        metadata.as_bytes(),
        event.payload.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    to_hex(&hasher.finalize())
}

/// Checks a stream's events (in version order, from version 1) against their hashes;
/// returns the first event whose hash does not follow.
pub fn verify_stream<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Result<(), &'a RecordedEvent> {
    let mut prev = GENESIS.to_string();
    for (expected_version, event) in (1u64..).zip(events) {
        if event.version != expected_version || event_hash(&prev, event) != event.hash {
            return Err(event);
        }
        prev.clone_from(&event.hash);
    }
    Ok(())
}

/// The digest of one commit's events: SHA-256 (hex) of `position:hash` of each event, in
/// position order, joined by commas. Recorded with every commit, it pins which events a
/// commit wrote and where, so an event deleted (the last one too), inserted or moved
/// between positions is found even where every stream's own chain still holds.
pub fn commit_digest<'a>(events: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    let mut digest = CommitDigest::default();
    for (position, hash) in events {
        digest.push(position, hash);
    }
    digest.finish()
}

/// [`commit_digest`] computed as the events come, without holding them.
#[derive(Clone, Default)]
pub struct CommitDigest {
    hasher: Sha256,
    first: u64,
    events: u64,
}

impl CommitDigest {
    /// The next event of the commit (in position order).
    pub fn push(&mut self, position: u64, hash: &str) {
        if self.events == 0 {
            self.first = position;
        } else {
            self.hasher.update(b",");
        }
        self.hasher.update(itoa::Buffer::new().format(position).as_bytes());
        self.hasher.update(b":");
        self.hasher.update(hash.as_bytes());
        self.events += 1;
    }

    /// The position of the first event pushed (0: none yet).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// How many events were pushed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The digest, as [`commit_digest`] gives it.
    pub fn finish(self) -> String {
        to_hex(&self.hasher.finalize())
    }
}

/// Lower-case hex of `bytes` (a table lookup per byte; `hex::encode` goes a char at a time,
/// which showed in profiles of verify and import, two hashes per event).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_hex_is_lower_case_hex_of_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(to_hex(&all), hex::encode(&all));
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x0f, 0xa0]), "0fa0");
    }

    #[test]
    fn commit_digest_is_sha256_of_positions_and_hashes_joined_by_commas() {
        let text = "9:ab,10:cd,11:ef";
        assert_eq!(commit_digest([(9, "ab"), (10, "cd"), (11, "ef")]), to_hex(&Sha256::digest(text.as_bytes())));
        assert_eq!(commit_digest([]), to_hex(&Sha256::digest(b"")));
    }
}
