//! Schema messages: Relation (`'R'`) and Type (`'Y'`).

use super::reader::{put_count_i16, put_cstring};
use super::{DecodeError, Reader};

/// Which old values PostgreSQL logs for updates and deletes (`ALTER TABLE ... REPLICA
/// IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `'d'`: the primary key (the default).
    Default,
    /// `'n'`: nothing.
    Nothing,
    /// `'f'`: all columns.
    Full,
    /// `'i'`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The wire byte (`pg_class.relreplident`).
    pub fn byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }

    /// Parses the wire byte.
    pub fn from_byte(b: u8) -> Result<ReplicaIdentity, DecodeError> {
        match b {
            b'd' => Ok(ReplicaIdentity::Default),
            b'n' => Ok(ReplicaIdentity::Nothing),
            b'f' => Ok(ReplicaIdentity::Full),
            b'i' => Ok(ReplicaIdentity::Index),
            other => Err(DecodeError::BadReplicaIdentity(other)),
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 0 ([`RelationColumn::KEY`]): the column is part of the replica identity key.
    /// Other bits are kept as received.
    pub flags: u8,
    /// Column name.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when there is none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// The flag bit for a key column.
    pub const KEY: u8 = 1;

    /// Whether the column is part of the replica identity key.
    pub fn is_key(&self) -> bool {
        self.flags & Self::KEY != 0
    }

    fn decode(r: &mut Reader<'_>) -> Result<RelationColumn, DecodeError> {
        Ok(RelationColumn {
            flags: r.u8()?,
            name: r.cstring()?,
            type_oid: r.u32()?,
            type_modifier: r.i32()?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        put_cstring(out, &self.name);
        out.extend_from_slice(&self.type_oid.to_be_bytes());
        out.extend_from_slice(&self.type_modifier.to_be_bytes());
    }
}

/// `'R'`: describes a table. Sent before the first change of the table in a session and
/// again after its definition changes; changes refer to it by [`Relation::id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID.
    pub id: u32,
    /// Schema name; empty for `pg_catalog`.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The table's replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuples carry them.
    pub columns: Vec<RelationColumn>,
}

impl Relation {
    /// Wire tag.
    pub const TAG: u8 = b'R';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
        let id = r.u32()?;
        let namespace = r.cstring()?;
        let name = r.cstring()?;
        let replica_identity = ReplicaIdentity::from_byte(r.u8()?)?;
        let n = r.count_i16()?;
        // Every column takes at least 10 bytes; never trust the count for the allocation.
        let mut columns = Vec::with_capacity(n.min(r.remaining() / 10));
        for _ in 0..n {
            columns.push(RelationColumn::decode(r)?);
        }
        Ok(Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    /// Appends the whole message, tag included. Names must not contain NUL.
    ///
    /// # Panics
    /// If there are more than `i16::MAX` columns.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.id.to_be_bytes());
        put_cstring(out, &self.namespace);
        put_cstring(out, &self.name);
        out.push(self.replica_identity.byte());
        put_count_i16(out, self.columns.len());
        for column in &self.columns {
            column.encode(out);
        }
    }

    /// The schema-qualified name, `namespace.name` (just `name` when the namespace is
    /// empty). Not quoted.
    pub fn qualified_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.namespace, self.name)
        }
    }
}

/// `'Y'`: describes a data type that is not built in, before a relation uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// The type's OID.
    pub id: u32,
    /// Schema name; empty for `pg_catalog`.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

impl Type {
    /// Wire tag.
    pub const TAG: u8 = b'Y';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Type, DecodeError> {
        Ok(Type {
            id: r.u32()?,
            namespace: r.cstring()?,
            name: r.cstring()?,
        })
    }

    /// Appends the whole message, tag included. Names must not contain NUL.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.id.to_be_bytes());
        put_cstring(out, &self.namespace);
        put_cstring(out, &self.name);
    }
}
