//! Logical decoding messages (`'M'`), written by `pg_logical_emit_message`.

use super::reader::{put_bytes_i32, put_cstring};
use super::{DecodeError, Reader};

/// `'M'`: a message emitted with `pg_logical_emit_message(transactional, prefix, content)`.
/// Sent only when the client asked for the `messages` option (PostgreSQL 14+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Bit 0 set: the message is transactional (delivered inside its transaction, at
    /// commit); clear: delivered immediately, outside any Begin/Commit. Other bits are kept
    /// as received.
    pub flags: u8,
    /// The LSN of the message.
    pub lsn: u64,
    /// The prefix the emitter chose, to tell applications' messages apart.
    pub prefix: String,
    /// The content, uninterpreted.
    pub content: Vec<u8>,
}

impl LogicalMessage {
    /// Wire tag.
    pub const TAG: u8 = b'M';
    /// The flag bit for a transactional message.
    pub const TRANSACTIONAL: u8 = 1;

    /// Whether the message belongs to the surrounding transaction.
    pub fn is_transactional(&self) -> bool {
        self.flags & Self::TRANSACTIONAL != 0
    }

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let flags = r.u8()?;
        let lsn = r.u64()?;
        let prefix = r.cstring()?;
        let n = r.len_i32()?;
        let content = r.bytes(n)?.to_vec();
        Ok(LogicalMessage {
            flags,
            lsn,
            prefix,
            content,
        })
    }

    /// Appends the whole message, tag included. `prefix` must not contain NUL.
    ///
    /// # Panics
    /// If `content` is longer than `i32::MAX` bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.push(self.flags);
        out.extend_from_slice(&self.lsn.to_be_bytes());
        put_cstring(out, &self.prefix);
        put_bytes_i32(out, &self.content);
    }
}
