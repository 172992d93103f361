//! Row changes: Insert (`'I'`), Update (`'U'`), Delete (`'D'`) and Truncate (`'T'`).

use super::{DecodeError, Reader, TupleData};

/// Marker before a new tuple.
const NEW: u8 = b'N';
/// Marker before the old replica identity key.
const KEY: u8 = b'K';
/// Marker before the whole old row.
const OLD: u8 = b'O';

/// Reads a marker byte that must equal `expected`.
fn expect_marker(r: &mut Reader<'_>, expected: u8, what: &'static str) -> Result<(), DecodeError> {
    match r.u8()? {
        b if b == expected => Ok(()),
        found => Err(DecodeError::BadTupleMarker {
            expected: what,
            found,
        }),
    }
}

/// The old values sent with an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity key columns are meaningful; the others are NULL.
    Key(TupleData),
    /// `'O'`: the whole old row (`REPLICA IDENTITY FULL`).
    Old(TupleData),
}

impl OldTuple {
    /// The values, whichever kind.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Old(t) => t,
        }
    }

    /// Reads the tuple that follows an already read `'K'` or `'O'` marker.
    fn decode_after(marker: u8, r: &mut Reader<'_>) -> Result<OldTuple, DecodeError> {
        match marker {
            KEY => Ok(OldTuple::Key(TupleData::decode(r)?)),
            OLD => Ok(OldTuple::Old(TupleData::decode(r)?)),
            found => Err(DecodeError::BadTupleMarker {
                expected: "'K' or 'O'",
                found,
            }),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OldTuple::Key(_) => out.push(KEY),
            OldTuple::Old(_) => out.push(OLD),
        }
        self.tuple().encode(out);
    }
}

/// `'I'`: a row was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The relation id (see [`super::RelationCache`]).
    pub relation_id: u32,
    /// The new row.
    pub new: TupleData,
}

impl Insert {
    /// Wire tag.
    pub const TAG: u8 = b'I';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Insert, DecodeError> {
        let relation_id = r.u32()?;
        expect_marker(r, NEW, "'N'")?;
        Ok(Insert {
            relation_id,
            new: TupleData::decode(r)?,
        })
    }

    /// Appends the whole message, tag included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.relation_id.to_be_bytes());
        out.push(NEW);
        self.new.encode(out);
    }
}

/// `'U'`: a row was updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The relation id.
    pub relation_id: u32,
    /// The old key if the key changed, or the old row under `REPLICA IDENTITY FULL`;
    /// usually absent.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`super::Column::UnchangedToast`].
    pub new: TupleData,
}

impl Update {
    /// Wire tag.
    pub const TAG: u8 = b'U';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Update, DecodeError> {
        let relation_id = r.u32()?;
        let old = match r.u8()? {
            NEW => None,
            marker @ (KEY | OLD) => {
                let old = OldTuple::decode_after(marker, r)?;
                expect_marker(r, NEW, "'N'")?;
                Some(old)
            }
            found => {
                return Err(DecodeError::BadTupleMarker {
                    expected: "'K', 'O' or 'N'",
                    found,
                })
            }
        };
        Ok(Update {
            relation_id,
            old,
            new: TupleData::decode(r)?,
        })
    }

    /// Appends the whole message, tag included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.relation_id.to_be_bytes());
        if let Some(old) = &self.old {
            old.encode(out);
        }
        out.push(NEW);
        self.new.encode(out);
    }
}

/// `'D'`: a row was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The relation id.
    pub relation_id: u32,
    /// The old key, or the old row under `REPLICA IDENTITY FULL`.
    pub old: OldTuple,
}

impl Delete {
    /// Wire tag.
    pub const TAG: u8 = b'D';

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Delete, DecodeError> {
        let relation_id = r.u32()?;
        let marker = r.u8()?;
        Ok(Delete {
            relation_id,
            old: OldTuple::decode_after(marker, r)?,
        })
    }

    /// Appends the whole message, tag included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        out.extend_from_slice(&self.relation_id.to_be_bytes());
        self.old.encode(out);
    }
}

/// `'T'`: one `TRUNCATE` statement, covering one or more relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Option bits: [`Truncate::CASCADE`], [`Truncate::RESTART_IDENTITY`]; others kept as
    /// received.
    pub options: u8,
    /// The truncated relations' ids.
    pub relation_ids: Vec<u32>,
}

impl Truncate {
    /// Wire tag.
    pub const TAG: u8 = b'T';
    /// Option bit: `TRUNCATE ... CASCADE`.
    pub const CASCADE: u8 = 1;
    /// Option bit: `TRUNCATE ... RESTART IDENTITY`.
    pub const RESTART_IDENTITY: u8 = 2;

    /// Whether `CASCADE` was given.
    pub fn cascade(&self) -> bool {
        self.options & Self::CASCADE != 0
    }

    /// Whether `RESTART IDENTITY` was given.
    pub fn restart_identity(&self) -> bool {
        self.options & Self::RESTART_IDENTITY != 0
    }

    /// Reads the body (everything after the tag byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<Truncate, DecodeError> {
        let count = r.u32()?;
        let options = r.u8()?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        // Each id takes 4 bytes; never trust the count for the allocation.
        let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
        for _ in 0..count {
            relation_ids.push(r.u32()?);
        }
        Ok(Truncate {
            options,
            relation_ids,
        })
    }

    /// Appends the whole message, tag included.
    ///
    /// # Panics
    /// If there are more than `u32::MAX` relation ids.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::TAG);
        let count = u32::try_from(self.relation_ids.len()).expect("pgoutput: too many relations");
        out.extend_from_slice(&count.to_be_bytes());
        out.push(self.options);
        for id in &self.relation_ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}
