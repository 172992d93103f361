//! Transaction framing: Begin (`'B'`), Commit (`'C'`) and Origin (`'O'`).

use super::reader::put_cstring;
use super::{DecodeError, Reader};

/// `'B'`: the start of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record (equals [`Commit::commit_lsn`]).
    pub final_lsn: u64,
    /// Commit time, microseconds since 2000-01-01 UTC (see [`super::fmt_timestamp`]).
    pub commit_ts: i64,
    /// Transaction id (an unsigned 32-bit `TransactionId`).
    pub xid: u32,
}

impl Begin {
    /// Wire tag.
    pub const TAG: u8 = b'B';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Begin, DecodeError> {
        Ok(Begin {
            final_lsn: r.u64()?,
            commit_ts: r.i64()?,
            xid: r.u32()?,
        })
    }

    /// Appends the whole message, tag included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.final_lsn.to_be_bytes());
        out.extend_from_slice(&self.commit_ts.to_be_bytes());
        out.extend_from_slice(&self.xid.to_be_bytes());
    }
}

/// `'C'`: the end of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by PostgreSQL (always 0); kept so re-encoding is exact.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: u64,
    /// The LSN just past the commit record: what to confirm as flushed once the
    /// transaction is safely handled.
    pub end_lsn: u64,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
}

impl Commit {
    /// Wire tag.
    pub const TAG: u8 = b'C';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
        Ok(Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_ts: r.i64()?,
        })
    }

    /// Appends the whole message, tag included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.push(self.flags);
        out.extend_from_slice(&self.commit_lsn.to_be_bytes());
        out.extend_from_slice(&self.end_lsn.to_be_bytes());
        out.extend_from_slice(&self.commit_ts.to_be_bytes());
    }
}

/// `'O'`: the current transaction was replicated from another node. There can be several
/// in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The LSN of the commit on the origin server.
    pub lsn: u64,
    /// Name of the replication origin.
    pub name: String,
}

impl Origin {
    /// Wire tag.
    pub const TAG: u8 = b'O';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
        Ok(Origin {
            lsn: r.u64()?,
            name: r.cstring()?,
        })
    }

    /// Appends the whole message, tag included. `name` must not contain NUL.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.lsn.to_be_bytes());
        put_cstring(out, &self.name);
    }
}
