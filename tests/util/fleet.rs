//! The device fleet: where the inventory lives (`Db`, `both!`), the CA server, the agent, tokens and enrollment bursts.

use super::*;

/// Enrolls a device through the authority library, as `mtlsgate ca serve` does, with a
/// token made by `mtlsgate token create` (`token_args`, e.g. `["--tag", "lab"]`): writes
/// `NAME.key` (made by openssl) and `NAME.crt` (leaf + intermediate); returns the device ID
/// and serial. `database` is a PostgreSQL URL, or `None` for the CA directory's SQLite.
pub fn enroll_device(
    w: &Work,
    ca_dir: &str,
    database: Option<&str>,
    name: &str,
    token_args: &[&str],
) -> (String, String) {
    let mut a = vec!["token", "create", "--dir", ca_dir];
    a.extend_from_slice(token_args);
    if let Some(db) = database {
        a.extend_from_slice(&["--database", db]);
    }
    let out = w.mg(&a).ok();
    let token = out.lines().last().expect("a token").trim().to_string();
    let csr = openssl_csr(w, name, "/CN=ignored");
    let dir = w.path(ca_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let issued = rt.block_on(async {
        let loc = database.map(|u| mtlsgate_authority::Location::Postgres(u.to_string()));
        let mut auth = mtlsgate_authority::Authority::open(&dir, loc.as_ref(), Default::default())
            .await
            .expect("open the authority");
        auth.load_keys(None).expect("keys");
        let r = auth
            .enroll(
                mtlsgate_authority::EnrollRequest {
                    csr,
                    token: Some(token),
                    agent_version: Some("test".into()),
                    hostname: None,
                    addr: Some("127.0.0.1".into()),
                    ..Default::default()
                },
                time::OffsetDateTime::now_utc(),
            )
            .await
            .expect("enrolled");
        auth.close().await;
        r
    });
    match issued {
        mtlsgate_authority::Enrolled::Issued(i) => {
            std::fs::write(w.path(&format!("{name}.crt")), &i.certificate).expect("crt");
            (i.device_id, i.serial)
        }
        mtlsgate_authority::Enrolled::Pending { .. } => panic!("a token enrolls at once"),
    }
}

/// Where a fleet test's CA keeps its inventory.
#[derive(Debug, Clone)]
pub enum Db {
    /// `ca/inventory.db`.
    Sqlite,
    /// A fresh database on `MTLSGATE_TEST_POSTGRES`.
    Postgres(String),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite
    }

    /// A fresh database `t_<random>` on the test server named by `MTLSGATE_TEST_POSTGRES`
    /// (`scripts/test` starts one; locally `scripts/postgres start DIR PORT`). Fails without
    /// it: a PostgreSQL test is never skipped.
    pub fn postgres() -> Db {
        Db::Postgres(mtlsgate_store::test_support::new_database_blocking())
    }

    /// The flags that name this inventory (`--database URL`, or none).
    pub fn flags(&self) -> Vec<String> {
        match self {
            Db::Sqlite => vec![],
            Db::Postgres(u) => vec!["--database".into(), u.clone()],
        }
    }
}

/// Runs a fleet flow `fn name(db: Db)` once on SQLite and once on PostgreSQL:
/// `both!(name, other)` makes `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(crate::util::Db::sqlite())
            }
            #[test]
            fn postgres() {
                super::$name(crate::util::Db::postgres())
            }
        }
    )*};
}

/// `cert issue server localhost --dir ca --out .` on the inventory `db`: `localhost.crt`
/// and `localhost.key` for a gateway or a strict peer.
pub fn fleet_server_cert(w: &Work, db: &Db) {
    let mut a = vec![
        "cert",
        "issue",
        "server",
        "localhost",
        "--dir",
        "ca",
        "--out",
        ".",
    ];
    let f = db.flags();
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// A running `mtlsgate ca serve`, its port and its root's fingerprint.
pub struct CaServer {
    pub proc: Proc,
    pub port: u16,
    pub fingerprint: String,
}

impl CaServer {
    /// Starts `mtlsgate ca serve ARGS` (which should include `--listen 127.0.0.1:0`, or a
    /// port of its own) and waits until it listens.
    pub fn start(w: &Work, args: &[&str]) -> CaServer {
        let mut a = vec!["ca", "serve"];
        a.extend_from_slice(args);
        let out = w.path(&format!("ca-serve-{}.out", rand_suffix()));
        let mut proc = Proc::spawn(w.root(), &bin(), &a, &out);
        let rest = proc.wait_for("listening on 127.0.0.1:");
        let port = rest
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {rest:?}"));
        let fingerprint = proc
            .wait_for("root CA SHA-256 fingerprint: ")
            .trim()
            .to_string();
        CaServer {
            proc,
            port,
            fingerprint,
        }
    }

    /// `ca serve --dir ca --listen 127.0.0.1:0` on the inventory `db`, with `extra` flags.
    pub fn start_for(w: &Work, db: &Db, extra: &[&str]) -> CaServer {
        let mut a = vec!["--dir", "ca", "--listen", "127.0.0.1:0"];
        let f = db.flags();
        a.extend(s(&f));
        a.extend_from_slice(extra);
        Self::start(w, &a)
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Kills it with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let _ = self.proc.child.wait();
    }
}

/// `mtlsgate token create --server URL --dir ca EXTRA…`: the token (its last line).
pub fn server_token(w: &Work, srv: &CaServer, extra: &[&str]) -> String {
    let url = srv.url();
    let mut a = vec!["token", "create", "--server", &url, "--dir", "ca"];
    a.extend_from_slice(extra);
    let out = w.mg(&a).ok();
    out.lines().last().expect("token line").trim().to_string()
}

/// `mtlsgate agent enroll --server URL --token T --root-fingerprint FP --dir DIR`: the
/// device ID (from `agent whoami`).
pub fn agent_enroll(w: &Work, srv: &CaServer, token: &str, dir: &str) -> String {
    let url = srv.url();
    w.mg(&[
        "agent",
        "enroll",
        "--server",
        &url,
        "--token",
        token,
        "--root-fingerprint",
        &srv.fingerprint,
        "--dir",
        dir,
    ])
    .ok();
    w.mg(&["agent", "whoami", "--dir", dir])
        .ok()
        .trim()
        .to_string()
}

/// `mtlsgate ARGS… --server URL --dir ca` (a fleet command through the admin API).
pub fn fleet_cmd(w: &Work, srv: &CaServer, args: &[&str]) -> Run {
    let url = srv.url();
    let mut a = args.to_vec();
    a.extend_from_slice(&["--server", &url, "--dir", "ca"]);
    w.mg(&a)
}

/// Runs tests/peers/enroll_burst.py: the bodies (JSON lines in `input`) are POSTed to
/// `URL/v1/enroll`, `threads` at a time, trusting `cafile`; answers are appended to
/// `output` as they arrive. Returns the running process.
pub fn enroll_burst(
    w: &Work,
    url: &str,
    cafile: &str,
    threads: usize,
    input: &str,
    output: &str,
) -> Proc {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/enroll_burst.py");
    let t = threads.to_string();
    Proc::spawn(
        w.root(),
        "python3",
        &[script, url, cafile, &t, input, output],
        &w.path(&format!("burst-{}.out", rand_suffix())),
    )
}

/// `n` enrollment tokens made in one go through the authority library (as `token create`
/// would make them, without starting `n` processes), for the CA in `ca/` on `db`.
pub fn library_tokens(w: &Work, db: &Db, n: usize) -> Vec<String> {
    use mtlsgate_authority::{Authority, Location, Policy, TokenRequest};
    let dir = w.path("ca");
    let loc = match db {
        Db::Sqlite => None,
        Db::Postgres(u) => Some(Location::Postgres(u.clone())),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let auth = Authority::open(&dir, loc.as_ref(), Policy::default())
                .await
                .expect("open the CA");
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = auth
                    .create_token(
                        TokenRequest {
                            ttl: time::Duration::hours(1),
                            ..Default::default()
                        },
                        "test",
                        time::OffsetDateTime::now_utc(),
                    )
                    .await
                    .expect("token");
                out.push(t.token);
            }
            auth.close().await;
            out
        })
}

/// Writes one `POST /v1/enroll` body per token (a new key and CSR each) to `rel`.
pub fn enroll_bodies(w: &Work, tokens: &[String], rel: &str) {
    let mut text = String::new();
    for t in tokens {
        let body = serde_json::json!({"csr": new_csr(), "token": t, "agent_version": "burst"});
        text.push_str(&body.to_string());
        text.push('\n');
    }
    w.write(rel, &text);
}

/// The answers tests/peers/enroll_burst.py wrote so far.
pub fn burst_answers(w: &Work, rel: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.path(rel))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(json)
        .collect()
}
