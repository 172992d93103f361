//! A bounds-checked cursor over a message payload, and the matching big-endian writers.

use super::DecodeError;

/// A cursor over a byte slice that reads PostgreSQL's big-endian wire types.
///
/// Every read checks the remaining length first and returns [`DecodeError::Truncated`]
/// instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.remaining();
        if n > left {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - left,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Reads a `Byte1` / `Int8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads an `Int16`.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// Reads an `Int32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// Reads an `Int32` holding an unsigned value (an OID or a transaction id).
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads an `Int64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Reads an `Int64` holding an unsigned value (an LSN).
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a NUL-terminated UTF-8 `String`; the NUL is consumed but not returned.
    pub fn cstring(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                offset: self.buf.len(),
                needed: 1,
            });
        };
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| DecodeError::InvalidUtf8 { offset: start })?;
        self.pos += len + 1;
        Ok(text.to_owned())
    }

    /// Reads an `Int16` count that must not be negative.
    pub fn count_i16(&mut self) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            offset,
            length: n.into(),
        })
    }

    /// Reads an `Int32` length that must not be negative.
    pub fn len_i32(&mut self) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            offset,
            length: n.into(),
        })
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// Appends a NUL-terminated string. `s` must not contain NUL (PostgreSQL names cannot).
pub(super) fn put_cstring(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Appends an `Int16` count.
///
/// # Panics
/// If `n` exceeds `i16::MAX`; PostgreSQL tables have at most 1664 columns.
pub(super) fn put_count_i16(out: &mut Vec<u8>, n: usize) {
    let n = i16::try_from(n).expect("pgoutput: more than i16::MAX columns");
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends an `Int32` length followed by the bytes.
///
/// # Panics
/// If `bytes` is longer than `i32::MAX`, which the format cannot express.
pub(super) fn put_bytes_i32(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = i32::try_from(bytes.len()).expect("pgoutput: value longer than i32::MAX");
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(bytes);
}
