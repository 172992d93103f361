//! Column types to value kinds: what each type OID is made of, read from the catalog once per
//! replication session and kept by OID.
//!
//! Built-in scalar types and their arrays are known without a query ([`Kind::of_builtin`]).
//! Any other type is looked up in `pg_type`: a domain is read as its base type (`to_jsonb`
//! looks through domains), an array as an array of its element type, with the element
//! type's delimiter (`typdelim`, `;` for `box`), `int2vector` and
//! `oidvector` (array types whose text is not an array literal) as vectors, a composite type
//! as its attributes (from `pg_attribute`, in order, dropped ones left out), each resolved in
//! turn; anything else (enums, `inet`, ...) becomes its text output as a JSON string.
//!
//! Types are read from the current catalog, while the walsender prints each value as its type
//! was when the change was written; only a composite type can differ between the two
//! (`ALTER TYPE .. ADD/DROP/RENAME ATTRIBUTE`). A change written before such an ALTER but read
//! after it may not match, and neither does one written after it while the session still
//! holds the old attributes: PostgreSQL sends no new Relation message for a table when only
//! the type of one of its columns changes, so the next session (a reconnect or a restart)
//! is the first to look it up again. A record that does not match its attributes is an error
//! of the value (see [`crate::source::values::ValueError::Record`]), not of the stream.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use tokio_postgres::{Client, Row};

use super::convert::ConvertError;
use crate::source::values::{Field, Kind};

#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("looking up type {oid}: {source}")]
    Lookup {
        oid: u32,
        source: tokio_postgres::Error,
    },
}

/// A failed lookup is a failed catalog query of the Relation message's conversion (and is
/// classified as such: a lost connection is transient).
impl From<TypeError> for ConvertError {
    fn from(e: TypeError) -> Self {
        match e {
            TypeError::Lookup { oid, source } => ConvertError::Type { oid, source },
        }
    }
}

const TYPE: &str = "SELECT t.typtype::text, t.typcategory::text, t.typinput::text, \
    t.typbasetype, t.typelem, e.typdelim::text, t.typrelid \
    FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem WHERE t.oid = $1";

/// A composite type's attributes as `record_out` writes them.
const ATTRIBUTES: &str = "SELECT attname::text, atttypid FROM pg_attribute \
    WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum";

/// What a type's text output is made of.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// A domain: its base type's text.
    Domain(u32),
    /// An array literal of elements of this type, separated by this byte.
    Array(u32, u8),
    /// A composite type: a record literal of the attributes of this `pg_class` entry.
    Composite(u32),
    /// Elements of this type separated by spaces: an array type read by its own input function
    /// rather than `array_in` (`int2vector`, `oidvector`).
    Vector(u32),
    /// Anything else: its text is the value.
    Other,
}

impl Shape {
    fn of(row: &Row) -> Shape {
        let (typtype, category, input): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let (base, element): (u32, u32) = (row.get(3), row.get(4));
        // The element type's delimiter (none without an element type); the array reader takes
        // an ASCII one, an array of anything else stays text.
        let delimiter: Option<String> = row.get(5);
        let delimiter = match delimiter.as_deref().map(str::as_bytes) {
            Some(&[d]) if d.is_ascii() => Some(d),
            _ => None,
        };
        match (typtype.as_str(), category.as_str(), input.as_str()) {
            ("d", _, _) => Shape::Domain(base),
            ("c", _, _) => Shape::Composite(row.get(6)),
            (_, "A", "array_in") => delimiter.map_or(Shape::Other, |d| Shape::Array(element, d)),
            (_, "A", _) if element != 0 => Shape::Vector(element),
            _ => Shape::Other,
        }
    }
}

/// The kinds of the types seen so far in a session, by OID.
#[derive(Debug, Default)]
pub struct TypeCache {
    kinds: HashMap<u32, Kind>,
}

impl TypeCache {
    /// The kind of type `oid`: built in, cached, or looked up through `client` (together with
    /// the types it is made of).
    pub fn kind<'a>(
        &'a mut self,
        oid: u32,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<Kind, TypeError>> {
        Box::pin(async move {
            if let Some(kind) = Kind::of_builtin(oid).or_else(|| self.kinds.get(&oid).cloned()) {
                return Ok(kind);
            }
            let kind = match self.shape(oid, client).await? {
                Shape::Domain(base) => self.kind(base, client).await?,
                Shape::Array(element, delimiter) => {
                    Kind::Array(Box::new(self.kind(element, client).await?), delimiter)
                }
                Shape::Vector(element) => Kind::Vector(Box::new(self.kind(element, client).await?)),
                Shape::Composite(class) => Kind::Composite(self.fields(oid, class, client).await?),
                Shape::Other => Kind::OtherText,
            };
            self.kinds.insert(oid, kind.clone());
            Ok(kind)
        })
    }

    async fn shape(&self, oid: u32, client: &Client) -> Result<Shape, TypeError> {
        let row = client
            .query_opt(TYPE, &[&oid])
            .await
            .map_err(|source| TypeError::Lookup { oid, source })?;
        // A type dropped since the Relation message was sent: nothing more to know.
        Ok(row.as_ref().map_or(Shape::Other, Shape::of))
    }

    /// The attributes of composite type `oid`, whose `typrelid` is `class`.
    async fn fields(
        &mut self,
        oid: u32,
        class: u32,
        client: &Client,
    ) -> Result<Vec<Field>, TypeError> {
        let rows = client
            .query(ATTRIBUTES, &[&class])
            .await
            .map_err(|source| TypeError::Lookup { oid, source })?;
        let mut fields = Vec::with_capacity(rows.len());
        for row in rows {
            fields.push(Field {
                name: row.get(0),
                kind: self.kind(row.get(1), client).await?,
            });
        }
        Ok(fields)
    }
}
