//! A running `sluice tail`, its stdout lines and stderr collected.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::Env;

pub struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    pub fn start(env: &Env, args: &[&str]) -> Tail {
        Tail::spawn(env.command().arg("tail").args(args))
    }

    /// Any `sluice ... tail` command line.
    pub fn spawn(command: &mut Command) -> Tail {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                    .for_each(|l| sink.lock().unwrap().push(l))
            });
            lines
        };
        let lines = collect(Box::new(child.stdout.take().unwrap()));
        let errors = collect(Box::new(child.stderr.take().unwrap()));
        Tail {
            child,
            lines,
            errors,
        }
    }

    pub fn signal(&self, signal: &str) {
        std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn errors(&self) -> String {
        self.errors.lock().unwrap().join("\n")
    }

    /// The printed events per channel (`channel payload` lines), in print order.
    pub fn events(&self) -> BTreeMap<String, Vec<serde_json::Value>> {
        let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for line in self.lines.lock().unwrap().iter() {
            let (channel, payload) = line.split_once(' ').unwrap();
            let event: serde_json::Value = serde_json::from_str(payload).unwrap();
            out.entry(channel.to_string()).or_default().push(event);
        }
        out
    }

    /// The seqs printed per channel, in print order.
    pub fn seqs(&self) -> BTreeMap<String, Vec<u64>> {
        self.events()
            .into_iter()
            .map(|(c, events)| {
                (
                    c,
                    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect(),
                )
            })
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
