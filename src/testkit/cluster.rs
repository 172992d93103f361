//! A throwaway Redis Cluster: `redis-server --cluster-enabled yes` nodes on free ports, joined
//! with `redis-cli --cluster create`.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A master's port and the slot ranges it serves.
pub type Master = (u16, Vec<(u16, u16)>);

/// A Redis Cluster of `masters` masters, each with `replicas` replicas, every node a child
/// process in its own directory under one temp dir.
pub struct RedisCluster {
    dir: TempDir,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts the nodes and joins them; returns once every node reports `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> io::Result<RedisCluster> {
        let dir = TempDir::new("redis-cluster")?;
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port()?;
            cluster.nodes.push(Node { port, child: None });
            cluster.spawn(cluster.nodes.len() - 1)?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        run(&mut create, "redis-cli --cluster create")?;
        cluster.wait_ok(Duration::from_secs(30))?;
        cluster.wait_replicas_synced(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Every node's port, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The process id of the node on `port`, while it runs.
    pub fn pid(&self, port: u16) -> Option<u32> {
        let node = self.nodes.iter().find(|n| n.port == port)?;
        node.child.as_ref().map(Child::id)
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output (`--raw` answers).
    pub fn cli(&self, port: u16, args: &[&str]) -> io::Result<String> {
        let out = run(
            Command::new("redis-cli")
                .args(["-p", &port.to_string(), "--raw"])
                .args(args),
            "redis-cli",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the nodes that are masters now, with the slot ranges each serves.
    pub fn masters(&self) -> io::Result<Vec<Master>> {
        let port = *self
            .live_ports()
            .first()
            .ok_or_else(|| err("no live node".into()))?;
        Ok(masters_in(&self.cli(port, &["CLUSTER", "NODES"])?))
    }

    /// The ports of the replicas of the master on `master`.
    pub fn replicas_of(&self, master: u16) -> io::Result<Vec<u16>> {
        let id = self.node_id(master)?;
        let text = self.cli(master, &["CLUSTER", "NODES"])?;
        Ok(text
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[2].contains("slave") && f[3] == id)
            .filter_map(|f| f[1].split(['@', ':']).nth(1)?.parse().ok())
            .collect())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the node on `port`: a node that stops answering
    /// without closing its connections.
    pub fn pause(&self, port: u16, paused: bool) -> io::Result<()> {
        let pid = self
            .pid(port)
            .ok_or_else(|| err(format!("no node runs on {port}")))?;
        let signal = if paused { "-STOP" } else { "-CONT" };
        run(
            Command::new("kill").args([signal, &pid.to_string()]),
            "kill",
        )?;
        Ok(())
    }

    /// The cluster node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> io::Result<String> {
        Ok(self.cli(port, &["CLUSTER", "MYID"])?.trim().to_string())
    }

    /// Moves `slots` slots, with their keys, from the master on `from` to the master on `to`
    /// (`redis-cli --cluster reshard`), while clients go on; returns once every live node
    /// sees the same owners and no slot is left open.
    ///
    /// A master that gives away its last slot turns into a replica of the node that took it,
    /// and now and then it does so before redis-cli tells it so: redis-cli then stops on
    /// "Please use SETSLOT only with masters" (redis/redis#11104). The slot has moved all the
    /// same (the taker claimed it first); the other masters learn it from the taker.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> io::Result<()> {
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        let moved = run(
            Command::new("redis-cli")
                .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
                .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
                .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
                .args(["--cluster-pipeline", "100"]),
            "redis-cli --cluster reshard",
        );
        const LAST_SLOT_RACE: &str = "Please use SETSLOT only with masters";
        if let Err(e) = moved {
            if !e.to_string().contains(LAST_SLOT_RACE) {
                return Err(e);
            }
        }
        self.wait_agreed(Duration::from_secs(30))
    }

    /// Waits until every live node reports the same masters and slots, none of them open
    /// (importing or migrating).
    fn wait_agreed(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<String> = self
                .live_ports()
                .iter()
                .map(|&p| self.cli(p, &["CLUSTER", "NODES"]))
                .collect::<io::Result<_>>()?;
            let open = views.iter().any(|v| v.contains("->-") || v.contains("-<-"));
            let first = views.first().map(|v| masters_in(v));
            if !open && views.iter().all(|v| Some(masters_in(v)) == first) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "the nodes never agreed on the slots within {within:?}: {views:#?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) -> io::Result<()> {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        let node = node.ok_or_else(|| err(format!("no node on port {port}")))?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the node on `port` again (it keeps its nodes.conf, so it rejoins).
    pub fn restart(&mut self, port: u16) -> io::Result<()> {
        let i = self.nodes.iter().position(|n| n.port == port);
        let i = i.ok_or_else(|| err(format!("no node on port {port}")))?;
        self.kill(port)?;
        self.spawn(i)
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.live_ports().iter().all(|&p| {
                self.cli(p, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "the cluster did not reach cluster_state:ok within {within:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every replica's link to its master is up (its first sync done), so that a
    /// killed master can be replaced.
    pub fn wait_replicas_synced(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        for port in self.live_ports() {
            loop {
                let info = self.cli(port, &["INFO", "replication"])?;
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(err(format!("the replica on {port} never synced: {info}")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let port = self.nodes[i].port;
        let dir = self.dir.0.join(port.to_string());
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // a replica takes over however long it was cut off (the tests kill masters)
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot run redis-server: {e}")))?;
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cli(port, &["PING"]).ok().as_deref().map(str::trim) != Some("PONG") {
            if Instant::now() > deadline {
                let tail = log_tail(&log, 20);
                return Err(err(format!(
                    "cluster node {port} never answered PING\n{tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The masters a `CLUSTER NODES` answer names (failed ones left out), each with its port and
/// slot ranges, in port order.
fn masters_in(nodes: &str) -> Vec<Master> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let node_port = f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok());
        let Some(node_port) = node_port else { continue };
        let ranges = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|n| (n, n)),
            })
            .collect();
        out.push((node_port, ranges));
    }
    out.sort();
    out
}

/// A port P for a cluster node whose bus port P + 10000 is free too. Both lie below Linux's
/// ephemeral range (32768 and up), where [`free_port`]'s picks and outgoing connections would
/// take them now and then: a node whose bus port is taken never starts.
fn cluster_port() -> io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 2_768) as u16;
        if !taken.contains(&port) && bindable(port) && bindable(port + 10_000) {
            taken.push(port);
            return Ok(port);
        }
    }
    Err(err("no free port pair for a cluster node".into()))
}
