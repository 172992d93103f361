//! The relation cache.

use super::super::*;

#[test]
fn relation_cache() {
    let rel = |id, name: &str| Relation {
        id,
        namespace: String::new(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Full,
        columns: Vec::new(),
    };
    let mut cache = RelationCache::new();
    assert!(cache.is_empty() && cache.get(1).is_none());
    assert_eq!(cache.insert(rel(1, "a")), None);
    cache.observe(&Message::Relation(rel(2, "b")));
    cache.observe(&Message::Truncate(Truncate {
        options: 0,
        relation_ids: vec![3],
    }));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.insert(rel(1, "a2")).map(|r| r.name), Some("a".into()));
    assert_eq!(
        cache.get(1).map(Relation::qualified_name),
        Some("a2".into())
    );
    cache.clear();
    assert!(cache.is_empty() && cache.get(2).is_none());
}
