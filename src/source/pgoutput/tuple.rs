//! `TupleData`: the column values of one row, as carried by Insert, Update and Delete.

use super::reader::{put_bytes_i32, put_count_i16};
use super::{DecodeError, Reader};

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// `'n'`: the value is NULL.
    Null,
    /// `'u'`: an unchanged TOASTed value that was not sent. Not NULL: the row still has its
    /// old value, which the consumer does not know unless it kept it.
    UnchangedToast,
    /// `'t'`: the value in text format (the type's output function), in the server encoding.
    Text(Vec<u8>),
    /// `'b'`: the value in binary format (the type's send function); only with the `binary`
    /// option.
    Binary(Vec<u8>),
}

impl Column {
    /// Kind byte of [`Column::Null`].
    pub const NULL: u8 = b'n';
    /// Kind byte of [`Column::UnchangedToast`].
    pub const UNCHANGED_TOAST: u8 = b'u';
    /// Kind byte of [`Column::Text`].
    pub const TEXT: u8 = b't';
    /// Kind byte of [`Column::Binary`].
    pub const BINARY: u8 = b'b';

    /// Reads one column: kind byte, then for text and binary an `Int32` length and the bytes.
    pub fn decode(r: &mut Reader<'_>) -> Result<Column, DecodeError> {
        match r.u8()? {
            Self::NULL => Ok(Column::Null),
            Self::UNCHANGED_TOAST => Ok(Column::UnchangedToast),
            Self::TEXT => {
                let n = r.len_i32()?;
                Ok(Column::Text(r.bytes(n)?.to_vec()))
            }
            Self::BINARY => {
                let n = r.len_i32()?;
                Ok(Column::Binary(r.bytes(n)?.to_vec()))
            }
            kind => Err(DecodeError::BadTupleKind(kind)),
        }
    }

    /// Appends the wire form of this column.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Column::Null => out.push(Self::NULL),
            Column::UnchangedToast => out.push(Self::UNCHANGED_TOAST),
            Column::Text(bytes) => {
                out.push(Self::TEXT);
                put_bytes_i32(out, bytes);
            }
            Column::Binary(bytes) => {
                out.push(Self::BINARY);
                put_bytes_i32(out, bytes);
            }
        }
    }
}

/// The values of one row, in the column order of its [`super::Relation`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// One entry per column of the relation.
    pub columns: Vec<Column>,
}

impl TupleData {
    /// A tuple with these columns.
    pub fn new(columns: Vec<Column>) -> Self {
        TupleData { columns }
    }

    /// Reads an `Int16` column count, then that many columns.
    pub fn decode(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
        let n = r.count_i16()?;
        // Every column takes at least one byte, so this never over-allocates on bad input.
        let mut columns = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            columns.push(Column::decode(r)?);
        }
        Ok(TupleData { columns })
    }

    /// Appends the wire form of this tuple.
    ///
    /// # Panics
    /// If there are more than `i16::MAX` columns.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_count_i16(out, self.columns.len());
        for column in &self.columns {
            column.encode(out);
        }
    }
}
