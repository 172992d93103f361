//! Decoder (and encoder) for the messages of PostgreSQL's `pgoutput` logical decoding plugin.
//!
//! `pgoutput` is the output plugin behind PostgreSQL's built-in logical replication. A client
//! starts it with `START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1',
//! publication_names 'p')`; the walsender then sends `CopyData` frames whose XLogData (`'w'`)
//! payload is exactly one logical replication message as described in the PostgreSQL docs,
//! "Logical Replication Message Formats". This module turns such a payload into a typed
//! [`Message`] ([`Message::decode`]) and back ([`Message::encode`]); it knows nothing about
//! the surrounding replication (`CopyData`, `'w'`/`'k'` frames, standby status updates).
//!
//! A transaction arrives as `Begin`, then any number of `Relation`, `Type`, `Origin`, `Insert`,
//! `Update`, `Delete`, `Truncate` and transactional `Message`s, then `Commit`. Row changes only
//! carry a relation id: the matching [`Relation`] message is sent earlier in the same session
//! (before the first change of that table, and again after its schema changes), so a consumer
//! keeps a [`RelationCache`] and clears it whenever it reconnects.
//!
//! Things worth knowing when reading changes:
//! * A column value is one of four [`Column`] kinds. [`Column::UnchangedToast`] means "this
//!   large value did not change and was not sent", which is not the same as NULL.
//! * An `Update` carries the old key (`'K'`, the replica identity changed) or the whole old row
//!   (`'O'`, `REPLICA IDENTITY FULL`) only when there is one; usually there is none.
//! * Binary column values (`'b'`) appear only with the `binary` option (PostgreSQL 14+),
//!   logical decoding messages (`'M'`) only with the `messages` option (PostgreSQL 14+).
//! * Names, prefixes and the origin are decoded as UTF-8 and rejected otherwise.
//!
//! Supported: every message of protocol version 1, plus `'M'`. Not supported: streaming of
//! in-progress transactions (protocol version 2 with `streaming 'on'`: Stream Start/Stop/
//! Commit/Abort, and the extra xid that changes carry inside a stream) and two-phase commit
//! (protocol version 3). Their tags decode to [`DecodeError::UnsupportedTag`]; a client must
//! not request those options.

mod begin_commit;
mod cache;
mod change;
mod fmt;
mod message;
mod reader;
mod relation;
mod tuple;

#[cfg(test)]
mod tests;

pub use begin_commit::{Begin, Commit, Origin};
pub use cache::RelationCache;
pub use change::{Delete, Insert, OldTuple, Truncate, Update};
pub use fmt::{fmt_lsn, fmt_timestamp};
pub use message::LogicalMessage;
pub use reader::Reader;
pub use relation::{Relation, RelationColumn, ReplicaIdentity, Type};
pub use tuple::{Column, TupleData};

/// One decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `'B'`: start of a transaction.
    Begin(Begin),
    /// `'C'`: end of a transaction.
    Commit(Commit),
    /// `'O'`: the transaction came from another node (replication origin).
    Origin(Origin),
    /// `'R'`: description of a table; precedes its changes.
    Relation(Relation),
    /// `'Y'`: description of a non-built-in data type.
    Type(Type),
    /// `'I'`: a row was inserted.
    Insert(Insert),
    /// `'U'`: a row was updated.
    Update(Update),
    /// `'D'`: a row was deleted.
    Delete(Delete),
    /// `'T'`: one or more tables were truncated.
    Truncate(Truncate),
    /// `'M'`: a message from `pg_logical_emit_message`.
    Logical(LogicalMessage),
}

/// Why a payload is not a valid `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended early (also: a string without its terminating NUL).
    #[error("message truncated at byte {offset}: {needed} more byte(s) needed")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
        /// How many bytes the field needs beyond what is left.
        needed: usize,
    },
    /// The first byte names no known message type.
    #[error("unknown message tag {c:?} (0x{0:02X})", c = char::from(*.0))]
    UnknownTag(u8),
    /// The tag is a streaming or two-phase message, which this decoder does not support.
    #[error("unsupported message tag {c:?} (streaming or two-phase commit)", c = char::from(*.0))]
    UnsupportedTag(u8),
    /// A column in a tuple has a kind other than `n`, `u`, `t` or `b`.
    #[error("bad tuple column kind {c:?} (0x{0:02X})", c = char::from(*.0))]
    BadTupleKind(u8),
    /// A tuple marker (`N`, `K`, `O`) is missing or wrong.
    #[error("expected {expected} but found {c:?} (0x{found:02X})", c = char::from(*.found))]
    BadTupleMarker {
        /// What the format allows at this point.
        expected: &'static str,
        /// The byte that was there.
        found: u8,
    },
    /// A relation's replica identity is not `d`, `n`, `f` or `i`.
    #[error("bad replica identity {c:?} (0x{0:02X})", c = char::from(*.0))]
    BadReplicaIdentity(u8),
    /// A name, prefix or similar string is not valid UTF-8.
    #[error("string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// A count or length field is negative.
    #[error("negative length {length} at byte {offset}")]
    NegativeLength {
        /// Where the field starts.
        offset: usize,
        /// The value read.
        length: i64,
    },
    /// Bytes are left over after a complete message.
    #[error("{count} trailing byte(s) after the message")]
    TrailingBytes {
        /// How many bytes are left.
        count: usize,
    },
}

/// Tags of messages that exist in later protocol versions but are not supported here.
const UNSUPPORTED_TAGS: &[u8] = b"SEcAbPKrp";

impl Message {
    /// Decodes one message from a whole XLogData payload; trailing bytes are an error.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(buf);
        let tag = r.u8()?;
        let msg = match tag {
            Begin::TAG => Message::Begin(Begin::decode(&mut r)?),
            Commit::TAG => Message::Commit(Commit::decode(&mut r)?),
            Origin::TAG => Message::Origin(Origin::decode(&mut r)?),
            Relation::TAG => Message::Relation(Relation::decode(&mut r)?),
            Type::TAG => Message::Type(Type::decode(&mut r)?),
            Insert::TAG => Message::Insert(Insert::decode(&mut r)?),
            Update::TAG => Message::Update(Update::decode(&mut r)?),
            Delete::TAG => Message::Delete(Delete::decode(&mut r)?),
            Truncate::TAG => Message::Truncate(Truncate::decode(&mut r)?),
            LogicalMessage::TAG => Message::Logical(LogicalMessage::decode(&mut r)?),
            t if UNSUPPORTED_TAGS.contains(&t) => return Err(DecodeError::UnsupportedTag(t)),
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the wire form of this message (tag included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Begin(m) => m.encode(out),
            Message::Commit(m) => m.encode(out),
            Message::Origin(m) => m.encode(out),
            Message::Relation(m) => m.encode(out),
            Message::Type(m) => m.encode(out),
            Message::Insert(m) => m.encode(out),
            Message::Update(m) => m.encode(out),
            Message::Delete(m) => m.encode(out),
            Message::Truncate(m) => m.encode(out),
            Message::Logical(m) => m.encode(out),
        }
    }

    /// The wire tag of this message (`b'B'`, `b'C'`, ...).
    pub fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => Begin::TAG,
            Message::Commit(_) => Commit::TAG,
            Message::Origin(_) => Origin::TAG,
            Message::Relation(_) => Relation::TAG,
            Message::Type(_) => Type::TAG,
            Message::Insert(_) => Insert::TAG,
            Message::Update(_) => Update::TAG,
            Message::Delete(_) => Delete::TAG,
            Message::Truncate(_) => Truncate::TAG,
            Message::Logical(_) => LogicalMessage::TAG,
        }
    }
}
