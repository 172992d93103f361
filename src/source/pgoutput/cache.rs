//! The relation cache: what the row changes of a session refer to.

use std::collections::HashMap;

use super::{Message, Relation};

/// Maps relation ids to the latest [`Relation`] message seen for them.
///
/// Feed it every Relation message (a later one replaces an earlier one: the table's
/// definition changed) and [`RelationCache::clear`] it on reconnect, because a new session
/// sends Relation messages again and ids may have been reused meanwhile.
#[derive(Debug, Clone, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Relation>,
}

impl RelationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `relation`, returning the entry it replaces.
    pub fn insert(&mut self, relation: Relation) -> Option<Relation> {
        self.relations.insert(relation.id, relation)
    }

    /// Stores the message if it is a Relation message; ignores any other message.
    pub fn observe(&mut self, message: &Message) {
        if let Message::Relation(relation) = message {
            self.insert(relation.clone());
        }
    }

    /// The latest Relation message for `id`.
    pub fn get(&self, id: u32) -> Option<&Relation> {
        self.relations.get(&id)
    }

    /// Forgets every relation (call on reconnect).
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    /// How many relations are known.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// Whether no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}
