//! The whole flow at two gateways: the CA server is up, a token is made, the agent enrolls,
//! curl with the agent's files gets 200 through two gateway processes that consult the
//! inventory, the operator revokes the device, and both gateways refuse it — its kept-alive
//! connections, opened before the revocation, are closed by the gateways, and new requests
//! are refused. On PostgreSQL the change arrives by LISTEN/NOTIFY (the periodic full resync
//! is far later than this test waits); on SQLite by the poll.

use std::time::Instant;

use crate::util::{
    agent_enroll, curl, fleet_cmd, server_token, test_ca, CaServer, Db, Gate, KeptAlive, Upstream,
    Work,
};

both!(a_revocation_reaches_two_gateways_and_closes_kept_alive_connections);

fn gateway(w: &Work, db: &Db, up: &Upstream) -> Gate {
    let url = up.url();
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "localhost.crt",
        "--key",
        "localhost.key",
        "--client-ca",
        "ca/ca.crt",
        "--upstream",
        &url,
    ];
    match db {
        Db::Sqlite => a.extend(["--inventory", "ca", "--inventory-poll", "200ms"]),
        Db::Postgres(u) => a.extend(["--inventory", u.as_str()]),
    }
    Gate::start(w, &a)
}

fn a_revocation_reaches_two_gateways_and_closes_kept_alive_connections(db: Db) {
    let w = Work::new();
    test_ca(&w, &db);
    crate::util::fleet_server_cert(&w, &db);
    let srv = CaServer::start_for(&w, &db, &[]);
    let token = server_token(&w, &srv, &[]);
    let id = agent_enroll(&w, &srv, &token, "dev");

    let up = Upstream::start(&w);
    let gates = [gateway(&w, &db, &up), gateway(&w, &db, &up)];
    let dev = [
        "--cacert",
        "dev/ca.crt",
        "--cert",
        "dev/client.crt",
        "--key",
        "dev/client.key",
    ];
    for g in &gates {
        let u = g.url("/");
        let mut a = dev.to_vec();
        a.push(&u);
        let (code, body) = curl(&w, &a);
        assert_eq!(code, 200, "{body}");
    }
    let held: Vec<KeptAlive> = gates
        .iter()
        .map(|g| {
            let (k, status) =
                KeptAlive::open(&w, g.port, "dev/ca.crt", "dev/client.crt", "dev/client.key");
            assert_eq!(status, "200");
            k
        })
        .collect();

    let started = Instant::now();
    let out = fleet_cmd(&w, &srv, &["devices", "revoke", &id]).ok();
    assert!(out.contains(&format!("device {id} is revoked")), "{out}");
    for (i, k) in held.into_iter().enumerate() {
        assert!(
            k.closed(),
            "gateway {i} left the revoked device's kept-alive connection open"
        );
    }
    eprintln!(
        "both kept-alive connections closed {:?} after the revoke command started",
        started.elapsed()
    );
    for g in &gates {
        let u = g.url("/");
        let mut a = dev.to_vec();
        a.push(&u);
        let (code, body) = curl(&w, &a);
        assert_eq!(code, 403, "{body}");
        assert!(body.contains(&format!("device {id} is revoked")), "{body}");
        let log = g.proc.stderr();
        assert!(log.contains("closing the connection: "), "{log}");
    }
}
