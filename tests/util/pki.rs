//! Test certificates: the standard test PKI (CA, localhost server, devices dev1 and dev2), certificates and CSRs made by openssl itself, and what openssl reads off them.

use super::*;

/// The one test CA: `ca init --dir ca --device-domain d.example.local`, its inventory on
/// `db` (`ca/inventory.db`, or a PostgreSQL database).
pub fn test_ca(w: &Work, db: &Db) {
    let mut a = vec![
        "ca",
        "init",
        "--dir",
        "ca",
        "--device-domain",
        "d.example.local",
    ];
    let f = db.flags();
    a.extend(s(&f));
    w.mg(&a).ok();
}

/// The standard test PKI: a CA with device domain d.example.local in `ca/`, a server
/// certificate for localhost, client certificates dev1 and dev2, all in the work root.
pub fn pki(w: &Work) {
    test_ca(w, &Db::sqlite());
    w.mg(&[
        "cert",
        "issue",
        "server",
        "localhost",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
    for d in ["dev1", "dev2"] {
        w.mg(&[
            "cert",
            "issue",
            "client",
            d,
            "--device-id",
            d,
            "--dir",
            "ca",
            "--out",
            ".",
        ])
        .ok();
    }
}

pub fn openssl_field(w: &Work, cert: &str, flag: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", cert, "-noout", flag, "-nameopt", "RFC2253"],
        )
        .ok();
    let line = out.trim();
    line.split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| line.to_string())
}

/// A client certificate made and signed by openssl itself with the CA's intermediate key
/// (so that openssl, not mtlsgate, encodes the subject): writes NAME.key and NAME.crt
/// (leaf + intermediate).
pub fn openssl_client(w: &Work, name: &str, subj: &str, extra_req: &[&str]) {
    let (key, csr, leaf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}-leaf.crt"),
    );
    let mut req = vec![
        "req",
        "-new",
        "-utf8",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        subj,
    ];
    req.extend_from_slice(extra_req);
    w.cmd("openssl", &req).ok();
    w.write(
        "ext.cnf",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    );
    w.cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca/intermediate.crt",
            "-CAkey",
            "ca/intermediate.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            &leaf,
        ],
    )
    .ok();
    let chain = w.read(&leaf) + &w.read("ca/intermediate.crt");
    w.write(&format!("{name}.crt"), &chain);
}

/// Re-issues dev1 for 7.5 days: far from a day boundary, so whole days left are certain.
pub fn reissue_dev1_for_180h(w: &Work) {
    w.mg(&[
        "cert",
        "issue",
        "client",
        "dev1",
        "--device-id",
        "dev1",
        "--valid",
        "180h",
        "--force",
        "--dir",
        "ca",
        "--out",
        ".",
    ])
    .ok();
}

/// A client certificate NAME from a second CA called `ca_name` (in `other/`), written to
/// `o/NAME.crt` and `o/NAME.key`.
pub fn foreign_client(w: &Work, ca_name: &str, name: &str) {
    w.mg(&["ca", "init", "--dir", "other", "--name", ca_name])
        .ok();
    std::fs::create_dir_all(w.path("o")).expect("mkdir");
    w.mg(&[
        "cert", "issue", "client", name, "--dir", "other", "--out", "o",
    ])
    .ok();
}

/// The SHA-256 fingerprint of a certificate file as `openssl x509 -fingerprint` prints it.
pub fn openssl_sha256(w: &Work, file: &str) -> String {
    let out = w
        .cmd(
            "openssl",
            &["x509", "-in", file, "-noout", "-fingerprint", "-sha256"],
        )
        .ok();
    out.trim()
        .split_once('=')
        .expect("fingerprint")
        .1
        .to_string()
}

/// `AA:BB:…` → `aabb…`.
pub fn hex_lower(fp: &str) -> String {
    fp.replace(':', "").to_ascii_lowercase()
}

/// `openssl req` with a new P-256 key: writes `NAME.key` and `NAME.csr` (subject `subj`)
/// and returns the CSR (PEM).
pub fn openssl_csr(w: &Work, name: &str, subj: &str) -> Vec<u8> {
    w.cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subj,
        ],
    )
    .ok();
    std::fs::read(w.path(&format!("{name}.csr"))).expect("csr")
}

/// The serial of the first certificate in a PEM file, as openssl prints it (upper hex).
pub fn pem_serial(w: &Work, file: &str) -> String {
    let out = w
        .cmd("openssl", &["x509", "-in", file, "-noout", "-serial"])
        .ok();
    out.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_string()
}

/// A device CSR (PEM) with a new P-256 key made here (its subject is ignored by the CA).
pub fn new_csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}
