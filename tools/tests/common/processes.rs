//! A cluster of `megastore serve --replica` processes on loopback, with its own etcd as
//! the lock service, for tests that kill, stop and restart replicas; or one embedded
//! `megastore serve`. Every process is killed when its handle drops.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use megastore::tls::TlsFiles;

/// A free loopback port (the listener is closed again; the port is taken right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Reads `output` until a line that `is_ready` accepts; the rest is drained in the
/// background. Panics with what it printed if it ends first.
fn wait_for_line(
    output: impl std::io::Read + Send + 'static,
    what: &str,
    mut is_ready: impl FnMut(&str) -> bool,
) {
    let mut lines = BufReader::new(output).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if is_ready(&line) => break,
            Some(Ok(line)) => seen.push(line),
            _ => panic!("{what} ended before it was ready; it printed {seen:?}"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
}

/// Starts `megastore serve` with `args` and waits until it says it is ready, showing
/// `each_line` every line it prints before that.
fn megastore_serve(args: &[&OsStr], what: &str, mut each_line: impl FnMut(&str)) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_megastore"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("megastore serve starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    wait_for_line(stdout, what, |line| {
        each_line(line);
        line.starts_with("ready")
    });
    child
}

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An etcd member on free loopback ports, killed when dropped.
pub struct Etcd {
    _child: Running,
    pub endpoint: String,
    /// Over TLS: its certificate (self-signed, so also the CA a client trusts).
    pub ca: Option<PathBuf>,
}

impl Etcd {
    /// A one-member etcd cluster.
    pub fn start(dir: &Path) -> Etcd {
        Etcd::start_cluster(dir, 1).remove(0)
    }

    /// The members of one etcd cluster of `count`, each ready to serve.
    pub fn start_cluster(dir: &Path, count: usize) -> Vec<Etcd> {
        Etcd::start_cluster_with(dir, count, None)
    }

    /// A one-member etcd cluster that serves clients over TLS, with a self-signed
    /// certificate made in `dir` (`etcd.crt`), and accepts only clients with a
    /// certificate chaining to `client_ca`.
    pub fn start_tls(dir: &Path, client_ca: &Path) -> Etcd {
        let tls = TlsFiles {
            client_ca: Some(client_ca.to_path_buf()),
            ..super::certs::self_signed(dir, "etcd")
        };
        Etcd::start_cluster_with(dir, 1, Some(&tls)).remove(0)
    }

    fn start_cluster_with(dir: &Path, count: usize, tls: Option<&TlsFiles>) -> Vec<Etcd> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls_args: Vec<String> = match tls {
            None => Vec::new(),
            Some(tls) => {
                let file = |p: &Option<PathBuf>| p.as_ref().expect("named").display().to_string();
                vec![
                    "--cert-file".into(),
                    file(&tls.cert),
                    "--key-file".into(),
                    file(&tls.key),
                    "--client-cert-auth".into(),
                    "--trusted-ca-file".into(),
                    file(&tls.client_ca),
                ]
            }
        };
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd is not installed: run .ci/install-etcd (Debian's etcd-server)")
        });
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        // Each child is killed on drop from the moment it runs, should a later one fail.
        let children: Vec<(Running, std::process::ChildStderr, String)> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                let endpoint = format!("127.0.0.1:{client}");
                let mut child = Command::new(&etcd)
                    .args([
                        "--name",
                        &format!("m{i}"),
                        "--data-dir",
                        &dir.join(format!("etcd-{i}")).display().to_string(),
                        "--listen-client-urls",
                        &format!("{scheme}://{endpoint}"),
                        "--advertise-client-urls",
                        &format!("{scheme}://{endpoint}"),
                        "--listen-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-cluster",
                        &cluster.join(","),
                    ])
                    .args(&tls_args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("etcd starts");
                let stderr = child.stderr.take().expect("stderr is piped");
                (Running(child), stderr, endpoint)
            })
            .collect();
        // etcd logs to stderr; a member is ready once it says it serves clients (which
        // it does once the cluster has a leader).
        children
            .into_iter()
            .map(|(running, stderr, endpoint)| {
                wait_for_line(stderr, "etcd", |l| {
                    l.contains("serving insecure client requests")
                        || l.contains("serving client requests on")
                });
                Etcd {
                    _child: running,
                    endpoint,
                    ca: tls.and_then(|t| t.ca.clone()),
                }
            })
            .collect()
    }

    /// Whether this member is its cluster's leader, as its metrics say.
    pub fn is_leader(&self) -> bool {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.endpoint).expect("etcd answers");
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.endpoint
        )
        .expect("metrics request sent");
        let mut metrics = String::new();
        stream.read_to_string(&mut metrics).expect("metrics read");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("etcd_server_is_leader "))
            .unwrap_or_else(|| panic!("no leader metric from etcd at {}", self.endpoint));
        line.ends_with(" 1")
    }
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// The replicas of one config, each its own `megastore serve` process.
pub struct Processes {
    pub config: PathBuf,
    pub addresses: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Processes {
    /// Writes a config of `kinds` (replica i in `dir/replica-i`) using `etcd`, with
    /// calls between processes timing out after `timeout_ms`, and starts them all.
    pub fn start(dir: &Path, etcd: &Etcd, kinds: &[&str], lease_ms: u64, timeout_ms: u64) -> Self {
        Self::start_with(dir, etcd, kinds, lease_ms, timeout_ms, "")
    }

    /// The same, with `settings` (top-level TOML lines: token, TLS) added to the config.
    pub fn start_with(
        dir: &Path,
        etcd: &Etcd,
        kinds: &[&str],
        lease_ms: u64,
        timeout_ms: u64,
        settings: &str,
    ) -> Self {
        let addresses: Vec<String> = kinds
            .iter()
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut text = format!(
            "etcd = \"{}\"\nlease_ms = {lease_ms}\ntimeout_ms = {timeout_ms}\n{settings}",
            etcd.endpoint
        );
        for (i, (kind, address)) in kinds.iter().zip(&addresses).enumerate() {
            text.push_str(&format!(
                "[[replica]]\nid = {i}\nkind = \"{kind}\"\naddress = \"{address}\"\ndir = \"replica-{i}\"\n"
            ));
        }
        let config = dir.join("cluster.toml");
        std::fs::write(&config, text).expect("config written");
        let mut processes = Processes {
            config,
            addresses,
            children: kinds.iter().map(|_| None).collect(),
        };
        for i in 0..kinds.len() {
            processes.restart(i);
        }
        processes
    }

    /// Starts replica `i`'s process (again) and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        let id = i.to_string();
        let args = ["--replica", &id, "--config"].map(OsStr::new);
        let args = [&args[..], &[self.config.as_os_str()]].concat();
        self.children[i] = Some(megastore_serve(&args, &format!("replica {i}"), |_| {}));
    }

    /// SIGKILL: the process dies without closing anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP or SIGCONT.
    pub fn signal(&self, i: usize, signal: &str) {
        let child = self.children[i].as_ref().expect("replica runs");
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} replica {i}");
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if self.children[i].is_some() {
                let _ = self.signal_quietly(i, "CONT");
            }
            self.kill(i);
        }
    }
}

/// `megastore serve` in its embedded mode: every replica in one process, each on a
/// free port.
pub struct Embedded {
    _child: Running,
    pub addresses: Vec<String>,
}

impl Embedded {
    /// Starts it with data in `dir` and the extra `args`; waits until it serves.
    pub fn start(dir: &Path, args: &[&str]) -> Embedded {
        let mut all = ["--port", "0", "--dir"].map(OsStr::new).to_vec();
        all.push(dir.as_os_str());
        all.extend(args.iter().map(OsStr::new));
        // "replica 0 (full) listening on 127.0.0.1:40123, data in ..."
        let mut addresses = Vec::new();
        let child = megastore_serve(&all, "megastore serve", |line| {
            if let Some((_, rest)) = line.split_once(" listening on ") {
                addresses.extend(rest.split(',').next().map(str::to_string));
            }
        });
        Embedded {
            _child: Running(child),
            addresses,
        }
    }
}

impl Processes {
    fn signal_quietly(&self, i: usize, signal: &str) -> Option<()> {
        let child = self.children[i].as_ref()?;
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .ok()
            .map(drop)
    }
}
