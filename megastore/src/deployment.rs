//! A cluster described by a config file (`docs/megastore-serve.md`): its replicas
//! (id, kind, address, region, data directory), the schema, the coordinator leases'
//! lock service (etcd), the bearer token, TLS, and injected wide-area latency. Each replica
//! runs in its own process ([`ClusterConfig::open_replica`]), reaching the others over
//! gRPC; the embedded mode runs them all in one ([`crate::cluster::Cluster`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::SystemClock;
use bigtable::Engine;
use serde::Deserialize;
use wal::fs::RealFs;

use crate::etcd::EtcdLocks;
use crate::remote::client::GrpcTransport;
use crate::remote::latency::{DelayedTransport, Latencies};
use crate::replicas::{Member, MonotonicClock, ReplicaKind, Replication, Sleeper, Transport};
use crate::replication::ProposeOptions;
use crate::tls::TlsFiles;
use crate::{Database, DatabaseOptions, Error};

/// The file's contents, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    schema: Option<PathBuf>,
    lease_ms: Option<u64>,
    timeout_ms: Option<u64>,
    token: Option<String>,
    etcd: Option<String>,
    etcd_tls_ca: Option<PathBuf>,
    etcd_tls_cert: Option<PathBuf>,
    etcd_tls_key: Option<PathBuf>,
    lock_prefix: Option<String>,
    inject_latency: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_domain: Option<String>,
    tls_client_ca: Option<PathBuf>,
    replica: Vec<ReplicaFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaFile {
    id: u32,
    kind: String,
    address: String,
    #[serde(default)]
    region: String,
    dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// One replica of a configured cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaConfig {
    pub member: Member,
    /// Where its client API and replication service listen (`host:port`).
    pub address: String,
    pub region: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its certificate and key, and the CA its peers' chain to (none: plaintext).
    pub tls: TlsFiles,
}

/// A checked cluster config.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The schema's text (the PhotoApp example when the file names none).
    pub schema: String,
    pub lease: Duration,
    /// Bounds each call to another replica or to etcd.
    pub timeout: Duration,
    pub token: Option<String>,
    /// The etcd members (`host:port`, comma-separated) that keep coordinator leases.
    pub etcd: Option<String>,
    /// How replicas reach etcd: over TLS with `ca` set (trusting it), presenting
    /// `cert` if set; else in plaintext.
    pub etcd_tls: TlsFiles,
    pub lock_prefix: String,
    pub latencies: Option<Latencies>,
    /// By member index; member `i` has id `i`.
    pub replicas: Vec<ReplicaConfig>,
}

pub fn parse_kind(text: &str) -> Result<ReplicaKind, Error> {
    match text {
        "full" => Ok(ReplicaKind::Full),
        "witness" => Ok(ReplicaKind::Witness),
        "read-only" | "readonly" => Ok(ReplicaKind::ReadOnly),
        other => Err(Error::Invalid(format!(
            "unknown replica kind {other:?} (full, witness or read-only)"
        ))),
    }
}

/// Replica `r`'s TLS files: its own certificate and key if it names them, else the
/// cluster's; paths relative to `base`.
fn replica_tls(file: &ConfigFile, r: &ReplicaFile, base: &Path) -> TlsFiles {
    let path = |own: &Option<PathBuf>, shared: &Option<PathBuf>| {
        own.as_ref().or(shared.as_ref()).map(|p| base.join(p))
    };
    TlsFiles {
        cert: path(&r.tls_cert, &file.tls_cert),
        key: path(&r.tls_key, &file.tls_key),
        ca: file.tls_ca.as_ref().map(|p| base.join(p)),
        domain: file.tls_domain.clone(),
        client_ca: file.tls_client_ca.as_ref().map(|p| base.join(p)),
    }
}

/// TLS is all or nothing: with a CA set, every replica serves TLS, since each is
/// dialled with `https://`; without one, none does.
fn check_tls(replicas: &[ReplicaConfig]) -> Result<(), Error> {
    for (i, r) in replicas.iter().enumerate() {
        let tls = &r.tls;
        let why = match (tls.cert.is_some(), tls.key.is_some(), tls.ca.is_some()) {
            (true, true, true) | (false, false, false) => continue,
            (true, false, _) | (false, true, _) => "tls_cert and tls_key go together",
            (false, false, true) => "tls_ca is set, so it needs tls_cert and tls_key",
            (true, true, false) => "it serves TLS, so its peers need tls_ca to check it",
        };
        return Err(Error::Invalid(format!("replica {i}: {why}")));
    }
    let first = replicas.first().map(|r| &r.tls);
    if first.is_some_and(|t| t.domain.is_some() && t.ca.is_none()) {
        return Err(Error::Invalid("tls_domain needs tls_ca".into()));
    }
    if first.is_some_and(|t| t.client_ca.is_some() && t.ca.is_none()) {
        return Err(Error::Invalid(
            "tls_client_ca needs TLS: set tls_cert, tls_key and tls_ca too".into(),
        ));
    }
    Ok(())
}

/// The TLS files for reaching etcd, paths relative to `base`: a client certificate
/// (both files or neither) goes over TLS only.
fn etcd_tls(file: &ConfigFile, base: &Path) -> Result<TlsFiles, Error> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));
    let tls = TlsFiles {
        ca: path(&file.etcd_tls_ca),
        cert: path(&file.etcd_tls_cert),
        key: path(&file.etcd_tls_key),
        ..TlsFiles::default()
    };
    let why = match (tls.cert.is_some(), tls.key.is_some(), tls.ca.is_some()) {
        (true, false, _) | (false, true, _) => "etcd_tls_cert and etcd_tls_key go together",
        (true, true, false) => "etcd_tls_cert is sent over TLS only: set etcd_tls_ca too",
        _ => return Ok(tls),
    };
    Err(Error::Invalid(why.into()))
}

impl ClusterConfig {
    /// Reads the config file at `path`; paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a config, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, Error> {
        let mut file: ConfigFile =
            toml::from_str(text).map_err(|e| Error::Invalid(e.message().to_string()))?;
        let schema = match &file.schema {
            Some(p) => std::fs::read_to_string(base.join(p))
                .map_err(|e| Error::Invalid(format!("cannot read schema {}: {e}", p.display())))?,
            None => crate::examples::PHOTO_APP.to_string(),
        };
        let mut replicas = std::mem::take(&mut file.replica);
        replicas.sort_by_key(|r| r.id);
        let mut checked = Vec::with_capacity(replicas.len());
        for (i, r) in replicas.into_iter().enumerate() {
            if r.id as usize != i {
                return Err(Error::Invalid(format!(
                    "replica ids must be 0, 1, ... without gaps; found {} where {i} belongs",
                    r.id
                )));
            }
            let tls = replica_tls(&file, &r, base);
            let dir = base.join(
                r.dir
                    .unwrap_or_else(|| PathBuf::from(format!("megastore-data/replica-{i}"))),
            );
            checked.push(ReplicaConfig {
                member: Member {
                    id: r.id,
                    kind: parse_kind(&r.kind)?,
                },
                tls,
                address: r.address,
                region: r.region,
                dir,
            });
        }
        if !checked.iter().any(|r| r.member.kind == ReplicaKind::Full) {
            return Err(Error::Invalid("a cluster needs a full replica".into()));
        }
        check_tls(&checked)?;
        let etcd_tls = etcd_tls(&file, base)?;
        Ok(ClusterConfig {
            schema,
            lease: Duration::from_millis(file.lease_ms.unwrap_or(2000)),
            timeout: Duration::from_millis(file.timeout_ms.unwrap_or(2000)),
            token: file.token,
            etcd: file.etcd,
            etcd_tls,
            lock_prefix: file.lock_prefix.unwrap_or_else(|| "/megastore".into()),
            latencies: file
                .inject_latency
                .as_deref()
                .map(Latencies::parse)
                .transpose()?,
            replicas: checked,
        })
    }

    pub fn members(&self) -> Vec<Member> {
        self.replicas.iter().map(|r| r.member).collect()
    }

    /// How replica `me` reaches the others: over gRPC, delayed between regions when
    /// latency is injected.
    fn transport(&self, me: usize) -> Result<Arc<dyn Transport>, Error> {
        let others: Vec<Option<String>> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| (i != me).then(|| r.address.clone()))
            .collect();
        let grpc = Arc::new(GrpcTransport::new(
            &others,
            self.timeout,
            self.token.as_deref(),
            self.replicas[me].tls.client()?.as_ref(),
        )?);
        Ok(match &self.latencies {
            None => grpc,
            Some(latencies) => Arc::new(DelayedTransport {
                inner: grpc,
                from: self.replicas[me].region.clone(),
                regions: self.replicas.iter().map(|r| r.region.clone()).collect(),
                latencies: Arc::new(latencies.clone()),
            }),
        })
    }

    /// Opens replica `id` (in its own process): its engine in its data directory, its
    /// peers over gRPC, its coordinator's leases in etcd.
    pub fn open_replica(&self, id: u32) -> Result<Database, Error> {
        let me = id as usize;
        let replica = self
            .replicas
            .get(me)
            .ok_or_else(|| Error::Invalid(format!("the config has no replica {id}")))?;
        let etcd = self.etcd.as_deref().ok_or_else(|| {
            Error::Invalid(
                "replicas in separate processes need a lock service: set etcd = \"host:port\" \
                 (or several members, comma-separated)"
                    .into(),
            )
        })?;
        let lease_clock = Arc::new(MonotonicClock::new());
        let locks = Arc::new(EtcdLocks::new(
            etcd,
            self.etcd_tls.client()?.as_ref(),
            &self.lock_prefix,
            lease_clock.clone(),
            self.lease,
            self.timeout,
        )?);
        let engine = Arc::new(Engine::open(
            RealFs::shared(),
            &replica.dir,
            crate::layout::engine_options(),
        )?);
        let options = DatabaseOptions {
            replica_id: id,
            clock: Arc::new(SystemClock),
            replication: Some(Replication {
                members: self.members(),
                local: me,
                transport: self.transport(me)?,
                locks,
                lease_clock,
                waiter: Arc::new(Sleeper),
                propose: ProposeOptions::default(),
                seed: None,
                maintenance_every: Some(Duration::from_secs(10)),
            }),
            ..DatabaseOptions::default()
        };
        Database::open_with_schema(engine, &self.schema, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
        etcd = "127.0.0.1:2379"
        lease_ms = 500
        [[replica]]
        id = 1
        kind = "witness"
        address = "127.0.0.1:7402"
        [[replica]]
        id = 0
        kind = "full"
        address = "127.0.0.1:7401"
        region = "us"
        dir = "/data/r0"
        [[replica]]
        id = 2
        kind = "full"
        address = "127.0.0.1:7403"
    "#;

    #[test]
    fn a_config_is_read_in_id_order_with_defaults_filled_in() {
        let config = ClusterConfig::parse(THREE, Path::new("/etc/m")).expect("valid");
        let kinds: Vec<ReplicaKind> = config.members().iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [ReplicaKind::Full, ReplicaKind::Witness, ReplicaKind::Full]
        );
        assert_eq!(config.replicas[0].dir, PathBuf::from("/data/r0"));
        assert_eq!(
            config.replicas[2].dir,
            PathBuf::from("/etc/m/megastore-data/replica-2")
        );
        assert_eq!(config.lease, Duration::from_millis(500));
        assert_eq!(config.schema, crate::examples::PHOTO_APP);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let gap = THREE.replace("id = 2", "id = 3");
        let bad_kind = THREE.replace("\"witness\"", "\"voter\"");
        let unknown = format!("colour = \"red\"\n{THREE}");
        let no_full = THREE.replace("\"full\"", "\"witness\"");
        for (text, says) in [
            (gap.as_str(), "without gaps"),
            (bad_kind.as_str(), "unknown replica kind"),
            (unknown.as_str(), "colour"),
            (no_full.as_str(), "needs a full replica"),
            ("replica = 3", "invalid type"),
        ] {
            let e = ClusterConfig::parse(text, Path::new(".")).expect_err(text);
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
        }
    }

    #[test]
    fn tls_paths_resolve_against_the_config_and_a_replica_may_name_its_own() {
        let text = format!(
            "tls_cert = \"certs/all.crt\"\ntls_key = \"certs/all.key\"\n\
             tls_ca = \"/pki/ca.crt\"\ntls_domain = \"megastore.internal\"\n\
             tls_client_ca = \"clients.crt\"\n{THREE}"
        )
        .replace(
            "dir = \"/data/r0\"",
            "dir = \"/data/r0\"\ntls_cert = \"r0.crt\"\ntls_key = \"r0.key\"",
        );
        let config = ClusterConfig::parse(&text, Path::new("/etc/m")).expect("valid");
        let r0 = &config.replicas[0].tls;
        assert_eq!(r0.cert, Some(PathBuf::from("/etc/m/r0.crt")));
        assert_eq!(r0.key, Some(PathBuf::from("/etc/m/r0.key")));
        let r1 = &config.replicas[1].tls;
        assert_eq!(r1.cert, Some(PathBuf::from("/etc/m/certs/all.crt")));
        assert_eq!(r1.ca, Some(PathBuf::from("/pki/ca.crt")));
        assert_eq!(r1.domain.as_deref(), Some("megastore.internal"));
        assert_eq!(r1.client_ca, Some(PathBuf::from("/etc/m/clients.crt")));
        let plain = ClusterConfig::parse(THREE, Path::new("/etc/m")).expect("valid");
        assert_eq!(plain.replicas[0].tls, TlsFiles::default());
    }

    #[test]
    fn etcd_tls_takes_a_ca_and_perhaps_a_client_certificate() {
        let both = format!(
            "etcd_tls_ca = \"etcd/ca.crt\"\netcd_tls_cert = \"r.crt\"\netcd_tls_key = \"r.key\"\n{THREE}"
        );
        let config = ClusterConfig::parse(&both, Path::new("/etc/m")).expect("valid");
        assert_eq!(
            config.etcd_tls.ca,
            Some(PathBuf::from("/etc/m/etcd/ca.crt"))
        );
        assert_eq!(config.etcd_tls.cert, Some(PathBuf::from("/etc/m/r.crt")));
        assert_eq!(config.etcd_tls.key, Some(PathBuf::from("/etc/m/r.key")));
        let plain = ClusterConfig::parse(THREE, Path::new("/etc/m")).expect("valid");
        assert_eq!(plain.etcd_tls, TlsFiles::default());
        let no_key = format!("etcd_tls_ca = \"ca.crt\"\netcd_tls_cert = \"r.crt\"\n{THREE}");
        let no_ca = format!("etcd_tls_cert = \"r.crt\"\netcd_tls_key = \"r.key\"\n{THREE}");
        for (text, says) in [
            (
                no_key.as_str(),
                "etcd_tls_cert and etcd_tls_key go together",
            ),
            (no_ca.as_str(), "set etcd_tls_ca too"),
        ] {
            let e = ClusterConfig::parse(text, Path::new(".")).expect_err(text);
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
        }
    }

    #[test]
    fn tls_is_all_or_nothing_across_the_cluster() {
        let cert_key = "tls_cert = \"a.crt\"\ntls_key = \"a.key\"\n";
        let no_ca = format!("{cert_key}{THREE}");
        let no_key = format!("tls_cert = \"a.crt\"\ntls_ca = \"ca.crt\"\n{THREE}");
        let ca_only = format!("tls_ca = \"ca.crt\"\n{THREE}");
        let one_only = THREE.replace(
            "dir = \"/data/r0\"",
            "dir = \"/data/r0\"\ntls_cert = \"r0.crt\"\ntls_key = \"r0.key\"",
        );
        let domain_only = format!("tls_domain = \"m\"\n{THREE}");
        let client_ca_only = format!("tls_client_ca = \"c.crt\"\n{THREE}");
        for (text, says) in [
            (
                no_ca.as_str(),
                "replica 0: it serves TLS, so its peers need tls_ca",
            ),
            (
                no_key.as_str(),
                "replica 0: tls_cert and tls_key go together",
            ),
            (
                ca_only.as_str(),
                "replica 0: tls_ca is set, so it needs tls_cert",
            ),
            (one_only.as_str(), "replica 0: it serves TLS"),
            (domain_only.as_str(), "tls_domain needs tls_ca"),
            (client_ca_only.as_str(), "tls_client_ca needs TLS"),
        ] {
            let e = ClusterConfig::parse(text, Path::new(".")).expect_err(text);
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
        }
    }
}
