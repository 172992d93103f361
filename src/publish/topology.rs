//! Which Redis Cluster master serves which hash slot, as `CLUSTER SLOTS` tells it.
//!
//! The map is read from any node that answers (the seeds of `redis.url` first, then every
//! master it knew), and read again when a node redirects a command (`MOVED`), refuses it
//! (`CLUSTERDOWN`, a connection error), or turns out to be a replica.

use super::resp::Reply;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// A node's address as the cluster announces it.
pub type Addr = (String, u16);

/// The slot of a channel or key (CRC16 of its hash tag, or of the whole name).
pub fn slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// The masters and the slot → master map.
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// Masters, in the order `CLUSTER SLOTS` first names them.
    pub masters: Vec<Addr>,
    /// For each slot, an index into `masters`; `None` when no master serves it.
    owner: Vec<Option<u16>>,
}

/// Why an answer to `CLUSTER SLOTS` was not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("the answer to CLUSTER SLOTS is not a slot list")]
    Malformed,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` answer. An empty host means the node that was asked (`asked`).
    pub fn parse(reply: &Reply, asked: &Addr) -> Result<SlotMap, TopologyError> {
        let Reply::Array(ranges) = reply else {
            return Err(TopologyError::Malformed);
        };
        let mut map = SlotMap {
            masters: Vec::new(),
            owner: vec![None; SLOTS],
        };
        for range in ranges {
            let (start, end, addr) = range_of(range, asked).ok_or(TopologyError::Malformed)?;
            let index = match map.masters.iter().position(|a| *a == addr) {
                Some(i) => i,
                None => {
                    map.masters.push(addr);
                    map.masters.len() - 1
                }
            };
            for owner in &mut map.owner[start..=end] {
                *owner = Some(index as u16);
            }
        }
        Ok(map)
    }

    /// Slots no master serves.
    pub fn uncovered(&self) -> usize {
        self.owner.iter().filter(|o| o.is_none()).count()
    }

    /// The master serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner[slot as usize].map(usize::from)
    }

    /// Records a `MOVED slot host:port`: the slot is served elsewhere now.
    pub fn moved(&mut self, slot: u16, addr: Addr) -> usize {
        let index = match self.masters.iter().position(|a| *a == addr) {
            Some(i) => i,
            None => {
                self.masters.push(addr);
                self.masters.len() - 1
            }
        };
        self.owner[slot as usize] = Some(index as u16);
        index
    }

    /// The slot ranges master `index` serves, for messages (`0-5460,10923`).
    pub fn ranges(&self, index: usize) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut start: Option<usize> = None;
        for s in 0..=SLOTS {
            let mine = s < SLOTS && self.owner[s] == Some(index as u16);
            match (mine, start) {
                (true, None) => start = Some(s),
                (false, Some(a)) => {
                    out.push(if a == s - 1 {
                        a.to_string()
                    } else {
                        format!("{a}-{}", s - 1)
                    });
                    start = None;
                }
                _ => {}
            }
        }
        out.join(",")
    }
}

/// One `[start, end, [host, port, ...], replicas...]` entry.
fn range_of(range: &Reply, asked: &Addr) -> Option<(usize, usize, Addr)> {
    let Reply::Array(items) = range else {
        return None;
    };
    let (Some(Reply::Integer(start)), Some(Reply::Integer(end)), Some(Reply::Array(master))) =
        (items.first(), items.get(1), items.get(2))
    else {
        return None;
    };
    let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
    if start > end || end >= SLOTS {
        return None;
    }
    let host = match master.first()? {
        Reply::Bulk(h) if !h.is_empty() && h != b"?" => String::from_utf8(h.clone()).ok()?,
        _ => asked.0.clone(),
    };
    let Reply::Integer(port) = master.get(1)? else {
        return None;
    };
    Some((start, end, (host, u16::try_from(*port).ok()?)))
}

/// A redirection in an error reply: `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    Moved(u16, Addr),
    Ask(u16, Addr),
}

impl Redirect {
    pub fn parse(error: &str) -> Option<Redirect> {
        let mut words = error.split(' ');
        let kind = words.next()?;
        let slot: u16 = words.next()?.parse().ok()?;
        let (host, port) = words.next()?.rsplit_once(':')?;
        let addr = (host.to_string(), port.parse().ok()?);
        match kind {
            "MOVED" => Some(Redirect::Moved(slot, addr)),
            "ASK" => Some(Redirect::Ask(slot, addr)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Reply {
        Reply::Array(vec![
            Reply::Bulk(host.into()),
            Reply::Integer(port),
            Reply::Bulk(b"id".to_vec()),
        ])
    }

    #[test]
    fn reads_cluster_slots_and_redirects() {
        let asked = ("10.0.0.9".to_string(), 7000);
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                Reply::Integer(0),
                Reply::Integer(8191),
                node("10.0.0.1", 7001),
                node("10.0.0.4", 7004),
            ]),
            Reply::Array(vec![
                Reply::Integer(8192),
                Reply::Integer(16383),
                node("", 7000),
            ]),
        ]);
        let mut map = SlotMap::parse(&reply, &asked).unwrap();
        assert_eq!(map.uncovered(), 0);
        assert_eq!(map.masters, [("10.0.0.1".into(), 7001), asked.clone()]);
        assert_eq!(map.owner(slot("{a}x")), map.owner(slot("a")));
        assert_eq!(map.ranges(1), "8192-16383");
        let moved = Redirect::parse("MOVED 5 10.0.0.9:7000").unwrap();
        assert_eq!(moved, Redirect::Moved(5, asked.clone()));
        let Redirect::Moved(s, a) = moved else {
            unreachable!()
        };
        map.moved(s, a);
        assert_eq!(map.ranges(1), "5,8192-16383");
        assert_eq!(
            Redirect::parse("ASK 1 h:1"),
            Some(Redirect::Ask(1, ("h".into(), 1)))
        );
        assert_eq!(Redirect::parse("ERR nope"), None);
        assert_eq!(
            SlotMap::parse(&Reply::Integer(1), &asked).unwrap_err(),
            TopologyError::Malformed
        );
        let half = Reply::Array(vec![Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(99),
            node("h", 1),
        ])]);
        assert_eq!(
            SlotMap::parse(&half, &asked).unwrap().uncovered(),
            SLOTS - 100
        );
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // redis-cli CLUSTER KEYSLOT answers
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("sluice:meta:{crm:t1:leads}"), slot("crm:t1:leads"));
    }
}
