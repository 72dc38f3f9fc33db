//! `mtlsgate ca` and `mtlsgate cert`, checked with the real openssl CLI and Python's ssl.

use crate::util::{mode, Work};

#[test]
fn init_creates_root_and_intermediate_with_private_keys_0600() {
    let w = Work::new();
    let out = w.mg(&["ca", "init", "--name", "Acme"]).ok();
    assert!(out.contains("CN=Acme Root CA,O=Acme"), "{out}");
    for k in ["root.key", "intermediate.key"] {
        assert_eq!(mode(&w.path(&format!("mtlsgate-ca/{k}"))), 0o600, "{k}");
    }
    // The intermediate verifies against the root, and is a CA with pathlen 0.
    w.cmd(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "mtlsgate-ca/root.crt",
            "mtlsgate-ca/intermediate.crt",
        ],
    )
    .ok();
    let text = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "mtlsgate-ca/intermediate.crt",
                "-noout",
                "-text",
            ],
        )
        .ok();
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    // The key is ECDSA P-256 by default.
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // No staging directory is left behind.
    assert_eq!(w.listing("."), vec!["mtlsgate-ca".to_string()]);
}

#[test]
fn init_refuses_to_overwrite_an_existing_ca() {
    let w = Work::new();
    w.with_ca();
    let before = w.read("mtlsgate-ca/root.crt");
    let err = w.mg(&["ca", "init"]).fails();
    assert!(
        err.contains("a CA already exists in mtlsgate-ca: refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(w.read("mtlsgate-ca/root.crt"), before);
}

#[test]
fn init_with_each_key_type_issues_chains_openssl_accepts() {
    for kt in ["p384", "ed25519", "rsa2048"] {
        let w = Work::new();
        w.mg(&["ca", "init", "--key-type", kt]).ok();
        w.mg(&["cert", "issue", "client", "c1", "--key-type", kt])
            .ok();
        w.cmd(
            "openssl",
            &[
                "verify",
                "-CAfile",
                "mtlsgate-ca/root.crt",
                "-untrusted",
                "c1.crt",
                "c1.crt",
            ],
        )
        .ok();
    }
}

#[test]
fn encrypted_ca_keys_need_the_passphrase_and_openssl_can_decrypt_them() {
    let w = Work::new();
    w.write("pass.txt", "correct horse battery staple\n");
    w.write("wrong.txt", "not it\n");
    w.mg(&["ca", "init", "--passphrase-file", "pass.txt"]).ok();
    let key = w.read("mtlsgate-ca/intermediate.key");
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{key}"
    );
    // OpenSSL opens it with the passphrase (PBES2, AES-256-CBC).
    let info = w
        .cmd(
            "openssl",
            &[
                "pkey",
                "-in",
                "mtlsgate-ca/intermediate.key",
                "-passin",
                "file:pass.txt",
                "-noout",
                "-text",
            ],
        )
        .ok();
    assert!(info.contains("Private-Key"), "{info}");
    let err = w.mg(&["cert", "issue", "client", "c1"]).fails();
    assert!(
        err.contains("are encrypted: give their passphrase with --passphrase-file"),
        "{err}"
    );
    let err = w
        .mg(&[
            "cert",
            "issue",
            "client",
            "c1",
            "--passphrase-file",
            "wrong.txt",
        ])
        .fails();
    assert!(err.contains("the passphrase does not decrypt"), "{err}");
    assert!(!w.path("c1.key").exists() && !w.path("c1.crt").exists());
    w.mg(&[
        "cert",
        "issue",
        "client",
        "c1",
        "--passphrase-file",
        "pass.txt",
    ])
    .ok();
    assert_eq!(mode(&w.path("c1.key")), 0o600);
}

#[test]
fn bundle_prints_root_and_intermediate() {
    let w = Work::new();
    w.with_ca();
    let b = w.mg(&["ca", "bundle"]).ok();
    assert_eq!(b.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    w.write("bundle.pem", &b);
    let subjects = w
        .cmd(
            "openssl",
            &["crl2pkcs7", "-nocrl", "-certfile", "bundle.pem"],
        )
        .ok();
    assert!(subjects.contains("PKCS7"));
}

#[test]
fn issued_client_chain_verifies_with_openssl_and_has_eku_and_sans() {
    let w = Work::new();
    w.with_ca();
    let out = w
        .mg(&[
            "cert",
            "issue",
            "client",
            "dev1",
            "--device-id",
            "dev1",
            "--uri",
            "spiffe://example.org/device/dev1",
            "--out",
            "certs",
        ])
        .ok();
    assert!(out.contains("device ID:  dev1.d.example.local"), "{out}");
    assert_eq!(w.listing("certs"), vec!["ca.crt", "dev1.crt", "dev1.key"]);
    assert_eq!(mode(&w.path("certs/dev1.key")), 0o600);
    // Leaf + intermediate in NAME.crt.
    assert_eq!(
        w.read("certs/dev1.crt")
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    let v = w
        .cmd(
            "openssl",
            &[
                "verify",
                "-CAfile",
                "mtlsgate-ca/root.crt",
                "-untrusted",
                "certs/dev1.crt",
                "-purpose",
                "sslclient",
                "certs/dev1.crt",
            ],
        )
        .ok();
    assert!(v.contains("certs/dev1.crt: OK"), "{v}");
    let text = w
        .cmd(
            "openssl",
            &["x509", "-in", "certs/dev1.crt", "-noout", "-text"],
        )
        .ok();
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains("DNS:dev1.d.example.local, URI:spiffe://example.org/device/dev1"),
        "{text}"
    );
    assert!(
        text.contains("Subject: CN = dev1.d.example.local"),
        "{text}"
    );
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    // Default validity for clients: 7 days.
    let end = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "certs/dev1.crt",
                "-noout",
                "-checkend",
                &(8 * 86400).to_string(),
            ],
        )
        .code;
    assert_eq!(
        end, 1,
        "a client certificate should expire within 8 days by default"
    );
    // Serial: random, at least 64 bits.
    let serial = w
        .cmd(
            "openssl",
            &["x509", "-in", "certs/dev1.crt", "-noout", "-serial"],
        )
        .ok();
    let hex = serial.trim().trim_start_matches("serial=");
    assert!(hex.len() >= 16, "{serial}");
}

#[test]
fn device_id_already_in_the_domain_is_kept() {
    let w = Work::new();
    w.with_ca();
    w.mg(&[
        "cert",
        "issue",
        "client",
        "d2",
        "--device-id",
        "d2.d.example.local",
    ])
    .ok();
    let s = w
        .cmd("openssl", &["x509", "-in", "d2.crt", "-noout", "-subject"])
        .ok();
    assert_eq!(s.trim(), "subject=CN = d2.d.example.local");
}

#[test]
fn issued_server_cert_has_server_eku_sans_and_90_days() {
    let w = Work::new();
    w.with_ca();
    w.mg(&[
        "cert",
        "issue",
        "server",
        "api",
        "--dns",
        "api.example.com",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--ip",
        "::1",
    ])
    .ok();
    let text = w
        .cmd("openssl", &["x509", "-in", "api.crt", "-noout", "-text"])
        .ok();
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains(
            "DNS:api.example.com, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"
        ),
        "{text}"
    );
    let w89 = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "api.crt",
                "-noout",
                "-checkend",
                &(89 * 86400).to_string(),
            ],
        )
        .code;
    let w91 = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "api.crt",
                "-noout",
                "-checkend",
                &(91 * 86400).to_string(),
            ],
        )
        .code;
    assert_eq!((w89, w91), (0, 1));
    w.cmd(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            "-untrusted",
            "api.crt",
            "api.crt",
        ],
    )
    .ok();
}

#[test]
fn issue_refuses_to_overwrite_and_bad_names() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["cert", "issue", "client", "c1"]).ok();
    let key = w.read("c1.key");
    let err = w.mg(&["cert", "issue", "client", "c1"]).fails();
    assert!(
        err.contains("c1.crt already exists: refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(w.read("c1.key"), key);
    let err = w.mg(&["cert", "issue", "client", "../evil"]).fails();
    assert!(err.contains("invalid name `../evil`"), "{err}");
    let err = w
        .mg(&["cert", "issue", "client", "c2", "--valid", "7x"])
        .fails();
    assert!(err.contains("unknown unit"), "{err}");
    let err = w
        .mg(&["cert", "issue", "client", "c3", "--uri", "not a uri"])
        .fails();
    assert!(err.contains("invalid URI"), "{err}");
    let err = w
        .mg(&["cert", "issue", "server", "s1", "--dns", "bad_host!"])
        .fails();
    assert!(err.contains("invalid DNS name `bad_host!`"), "{err}");
}

#[test]
fn issue_refuses_to_replace_another_cas_bundle_in_out() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["ca", "init", "--dir", "other"]).ok();
    w.mg(&[
        "cert", "issue", "client", "c1", "--dir", "other", "--out", "out",
    ])
    .ok();
    let theirs = w.read("out/ca.crt");
    // Another CA's bundle is not replaced, and nothing is written or recorded.
    let err = w
        .mg(&["cert", "issue", "client", "c2", "--out", "out"])
        .fails();
    assert!(
        err.contains("out/ca.crt holds another CA's certificates: refusing to replace it"),
        "{err}"
    );
    assert_eq!(w.read("out/ca.crt"), theirs);
    assert_eq!(w.listing("out"), ["c1.crt", "c1.key", "ca.crt"]);
    assert!(!w.mg(&["ca", "list"]).ok().contains("c2"));
    // The same CA's bundle is rewritten as before; --force replaces another's.
    w.mg(&[
        "cert", "issue", "client", "c3", "--dir", "other", "--out", "out",
    ])
    .ok();
    assert_eq!(w.read("out/ca.crt"), theirs);
    w.mg(&["cert", "issue", "client", "c2", "--out", "out", "--force"])
        .ok();
    assert_eq!(w.read("out/ca.crt"), w.mg(&["ca", "bundle"]).ok());
}

#[test]
fn a_ca_directory_that_cannot_be_read_is_not_called_missing() {
    let w = Work::new();
    w.with_ca();
    // As another user than the CA's owner (root reads anything: then as nobody, who cannot
    // enter the work directory), the CA directory is out of reach.
    let uid = w.cmd("id", &["-u"]).ok();
    let dir = w.path("mtlsgate-ca");
    let mut cmd = if uid.trim() == "0" {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::util::BIN,
        ]);
        c
    } else {
        w.cmd("chmod", &["000", "mtlsgate-ca"]).ok();
        std::process::Command::new(crate::util::BIN)
    };
    let o = cmd
        .args(["ca", "list", "--dir"])
        .arg(&dir)
        .env_remove("MTLSGATE_CA_DIR")
        .output()
        .expect("run");
    let _ = w.cmd("chmod", &["700", "mtlsgate-ca"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(!err.contains("run `mtlsgate ca init"), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the CA in {}: permission denied",
            dir.display()
        )),
        "{err}"
    );
}

#[test]
fn missing_ca_and_newer_ca_format_are_refused() {
    let w = Work::new();
    let err = w.mg(&["cert", "issue", "client", "c1"]).fails();
    assert!(
        err.contains("no CA in mtlsgate-ca: run `mtlsgate ca init"),
        "{err}"
    );
    w.with_ca();
    let meta = w
        .read("mtlsgate-ca/ca.toml")
        .replace("format = 1", "format = 99");
    w.write("mtlsgate-ca/ca.toml", &meta);
    let err = w.mg(&["ca", "list"]).fails();
    assert!(
        err.contains("was written by a newer mtlsgate (CA format 99"),
        "{err}"
    );
}

#[test]
fn ca_dir_from_environment() {
    let w = Work::new();
    let out = std::process::Command::new(crate::util::BIN)
        .args(["ca", "init"])
        .env("MTLSGATE_CA_DIR", w.path("elsewhere"))
        .current_dir(w.root())
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(w.path("elsewhere/ca.toml").exists());
}

#[test]
fn list_shows_every_certificate_and_revocation() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["cert", "issue", "client", "c1", "--device-id", "dev1"])
        .ok();
    w.mg(&["cert", "issue", "server", "localhost"]).ok();
    let json = w.mg(&["ca", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 5);
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or(""))
        .collect();
    // `ca init` also issues the administrator certificate admin.crt.
    assert_eq!(
        kinds,
        vec!["root", "intermediate", "admin", "client", "server"]
    );
    assert_eq!(rows[2]["subject"], "CN=admin");
    assert_eq!(rows[3]["device_id"], "dev1.d.example.local");
    let serial = rows[3]["serial"].as_str().expect("serial").to_string();
    w.mg(&["ca", "revoke", &serial, "--reason", "keyCompromise"])
        .ok();
    let table = w.mg(&["ca", "list"]).ok();
    let line = table.lines().find(|l| l.starts_with(&serial)).expect("row");
    assert!(
        line.contains("revoked") && line.contains("dev1.d.example.local"),
        "{line}"
    );
    let err = w.mg(&["ca", "revoke", &serial]).fails();
    // When, as a date (not Unix seconds).
    assert!(
        err.contains("already revoked (since 20") && err.contains(" UTC)"),
        "{err}"
    );
    let err = w.mg(&["ca", "revoke", "ABCDEF"]).fails();
    assert!(err.contains("no certificate with serial ABCDEF"), "{err}");
    let err = w.mg(&["ca", "revoke", "c1", "--reason", "bored"]).fails();
    assert!(err.contains("invalid revocation reason `bored`"), "{err}");
}

#[test]
fn crl_verifies_with_openssl_and_lists_revoked_serials() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["cert", "issue", "client", "c1"]).ok();
    w.mg(&["cert", "issue", "client", "c2"]).ok();
    w.mg(&[
        "ca",
        "revoke",
        "--cert",
        "c1.crt",
        "--reason",
        "keyCompromise",
    ])
    .ok();
    w.mg(&["ca", "crl", "--out", "crl.pem"]).ok();
    let crl = w.read("crl.pem");
    assert_eq!(crl.matches("BEGIN X509 CRL").count(), 2);
    // The intermediate's CRL verifies against the intermediate.
    let v = w
        .cmd(
            "openssl",
            &[
                "crl",
                "-in",
                "crl.pem",
                "-CAfile",
                "mtlsgate-ca/ca.crt",
                "-verify",
                "-noout",
                "-text",
            ],
        )
        .ok();
    let serial1 = w
        .cmd("openssl", &["x509", "-in", "c1.crt", "-noout", "-serial"])
        .ok();
    let serial1 = serial1.trim().trim_start_matches("serial=").to_string();
    assert!(v.contains(&serial1), "{v}");
    assert!(v.contains("Key Compromise"), "{v}");
    let serial2 = w
        .cmd("openssl", &["x509", "-in", "c2.crt", "-noout", "-serial"])
        .ok();
    assert!(
        !v.contains(serial2.trim().trim_start_matches("serial=")),
        "{v}"
    );
    // openssl verify -crl_check_all (nginx's setting) rejects c1 and accepts c2.
    w.write(
        "all.pem",
        &format!("{}{}", w.read("mtlsgate-ca/ca.crt"), crl),
    );
    let r = w.cmd(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "all.pem",
            "-untrusted",
            "c1.crt",
            "c1.crt",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stdout.contains("certificate revoked") || r.stderr.contains("certificate revoked"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    w.cmd(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "all.pem",
            "-untrusted",
            "c2.crt",
            "c2.crt",
        ],
    )
    .ok();
    // DER form.
    w.mg(&["ca", "crl", "--der", "--out", "crl.der"]).ok();
    w.cmd(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "mtlsgate-ca/ca.crt",
            "-verify",
            "-noout",
        ],
    )
    .ok();
    // CRL numbers increase.
    let n = w
        .cmd(
            "openssl",
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                "crl.der",
                "-noout",
                "-crlnumber",
            ],
        )
        .ok();
    assert!(n.contains("crlNumber=0x02"), "{n}");
}

#[test]
fn sign_openssl_csr_and_refuse_bad_ones() {
    let w = Work::new();
    w.with_ca();
    // A CSR made as in the openssl private-CA tutorial, but with an adequate key.
    w.cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-subj",
            "/C=SE/O=Acme/CN=client.example",
            "-out",
            "client.csr",
        ],
    )
    .ok();
    w.mg(&[
        "cert",
        "sign",
        "client.csr",
        "--kind",
        "client",
        "--out",
        "client.crt",
    ])
    .ok();
    w.cmd(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "mtlsgate-ca/root.crt",
            "-untrusted",
            "client.crt",
            "-purpose",
            "sslclient",
            "client.crt",
        ],
    )
    .ok();
    let text = w
        .cmd("openssl", &["x509", "-in", "client.crt", "-noout", "-text"])
        .ok();
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains("Subject: C = SE, O = Acme, CN = client.example"),
        "{text}"
    );
    // The signed certificate matches the CSR's key.
    let a = w
        .cmd(
            "openssl",
            &["x509", "-in", "client.crt", "-noout", "-pubkey"],
        )
        .ok();
    let b = w
        .cmd("openssl", &["pkey", "-in", "client.key", "-pubout"])
        .ok();
    assert_eq!(a, b);

    // The openssl tutorial's 1024-bit key.
    w.cmd(
        "openssl",
        &[
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", "weak.key", "-subj",
            "/CN=weak", "-out", "weak.csr",
        ],
    )
    .ok();
    let err = w
        .mg(&["cert", "sign", "weak.csr", "--kind", "client"])
        .fails();
    assert!(err.contains("its RSA key is 1024 bits; at least 2048 bits are required, because keys that small can be factored"), "{err}");

    // A CSR asking to be a CA.
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
            "ca.key",
            "-subj",
            "/CN=sneaky",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-out",
            "ca.csr",
        ],
    )
    .ok();
    let err = w
        .mg(&["cert", "sign", "ca.csr", "--kind", "server"])
        .fails();
    assert!(
        err.contains("it asks to be a CA (basicConstraints CA:TRUE)"),
        "{err}"
    );

    // A CSR whose signature is broken: change a byte of the subject inside the DER.
    w.cmd(
        "openssl",
        &[
            "req",
            "-in",
            "client.csr",
            "-outform",
            "DER",
            "-out",
            "client.der",
        ],
    )
    .ok();
    let mut der = std::fs::read(w.path("client.der")).expect("der");
    let pos = der
        .windows(4)
        .position(|x| x == b"Acme")
        .expect("Acme in CSR");
    der[pos] = b'X';
    std::fs::write(w.path("tampered.der"), der).expect("write");
    let err = w
        .mg(&["cert", "sign", "tampered.der", "--kind", "client"])
        .fails();
    assert!(err.contains("its signature does not verify"), "{err}");

    // Not a CSR at all.
    w.write("junk.csr", "hello\n");
    let err = w
        .mg(&["cert", "sign", "junk.csr", "--kind", "client"])
        .fails();
    assert!(
        err.contains("not valid PEM") || err.contains("is not DER"),
        "{err}"
    );
}

#[test]
fn p12_opens_with_openssl_in_both_modes_and_curl_reads_it() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["cert", "issue", "client", "c1", "--device-id", "dev1"])
        .ok();
    w.write("pw.txt", "s3cret\n");
    w.mg(&[
        "cert",
        "p12",
        "--cert",
        "c1.crt",
        "--key",
        "c1.key",
        "--out",
        "c1.p12",
        "--password-file",
        "pw.txt",
    ])
    .ok();
    assert_eq!(mode(&w.path("c1.p12")), 0o600);
    let info = w.cmd(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            "c1.p12",
            "-passin",
            "pass:s3cret",
            "-noout",
        ],
    );
    assert_eq!(info.code, 0, "{}", info.stderr);
    assert!(info.stderr.contains("AES-256-CBC"), "{}", info.stderr);
    let dump = w
        .cmd(
            "openssl",
            &[
                "pkcs12",
                "-in",
                "c1.p12",
                "-passin",
                "pass:s3cret",
                "-nodes",
            ],
        )
        .ok();
    assert_eq!(dump.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(dump.contains("BEGIN PRIVATE KEY"));
    assert!(
        dump.contains("friendlyName: dev1.d.example.local"),
        "{dump}"
    );

    w.mg(&[
        "cert",
        "p12",
        "--cert",
        "c1.crt",
        "--key",
        "c1.key",
        "--out",
        "legacy.p12",
        "--password-file",
        "pw.txt",
        "--legacy",
    ])
    .ok();
    let info = w.cmd(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            "legacy.p12",
            "-passin",
            "pass:s3cret",
            "-noout",
        ],
    );
    assert_eq!(info.code, 0, "{}", info.stderr);
    assert!(
        info.stderr.contains("3DES") || info.stderr.contains("pbeWithSHA1And3-KeyTripleDES-CBC"),
        "{}",
        info.stderr
    );
    assert!(info.stderr.contains("sha1"), "{}", info.stderr);

    let wrong = w.cmd(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            "c1.p12",
            "-passin",
            "pass:nope",
            "-noout",
        ],
    );
    assert_ne!(wrong.code, 0);

    // A key that does not match the certificate is refused, and nothing is written.
    w.mg(&["cert", "issue", "client", "c2"]).ok();
    let err = w
        .mg(&[
            "cert",
            "p12",
            "--cert",
            "c1.crt",
            "--key",
            "c2.key",
            "--out",
            "bad.p12",
            "--password-file",
            "pw.txt",
        ])
        .fails();
    assert!(
        err.contains("the private key in c2.key does not match the certificate in c1.crt"),
        "{err}"
    );
    assert!(!w.path("bad.p12").exists());
}

#[test]
fn python_ssl_loads_the_issued_pair() {
    let w = Work::new();
    w.with_ca();
    w.mg(&["cert", "issue", "client", "c1", "--device-id", "dev1"])
        .ok();
    let py = "import ssl; c = ssl.create_default_context(cafile='ca.crt'); c.load_cert_chain('c1.crt', 'c1.key'); print('loaded')";
    let out = w.cmd("python3", &["-c", py]).ok();
    assert_eq!(out.trim(), "loaded");
}

#[test]
fn inspect_shows_nginx_style_dns_fingerprints_and_remaining_time() {
    let w = Work::new();
    w.with_ca();
    w.mg(&[
        "cert",
        "issue",
        "client",
        "c1",
        "--device-id",
        "dev1",
        "--uri",
        "spiffe://example.org/d/1",
    ])
    .ok();
    let j = w.mg(&["cert", "inspect", "c1.crt", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j).expect("json");
    let leaf = &v[0];
    assert_eq!(leaf["subject"], "CN=dev1.d.example.local");
    assert_eq!(leaf["issuer"], "CN=mtlsgate Intermediate CA,O=mtlsgate");
    assert_eq!(leaf["device_id"], "dev1.d.example.local");
    assert_eq!(leaf["spiffe_id"], "spiffe://example.org/d/1");
    assert_eq!(leaf["key"]["algorithm"], "ECDSA P-256");
    assert_eq!(leaf["extended_key_usages"][0], "clientAuth");
    // Fingerprints agree with openssl's.
    let fp = w
        .cmd(
            "openssl",
            &["x509", "-in", "c1.crt", "-noout", "-fingerprint", "-sha256"],
        )
        .ok();
    let fp = fp
        .trim()
        .split('=')
        .nth(1)
        .expect("fp")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(leaf["sha256_fingerprint"], fp.as_str());
    let fp1 = w
        .cmd(
            "openssl",
            &["x509", "-in", "c1.crt", "-noout", "-fingerprint", "-sha1"],
        )
        .ok();
    let fp1 = fp1
        .trim()
        .split('=')
        .nth(1)
        .expect("fp")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(leaf["sha1_fingerprint"], fp1.as_str());
    // Serial as openssl prints it.
    let s = w
        .cmd("openssl", &["x509", "-in", "c1.crt", "-noout", "-serial"])
        .ok();
    assert_eq!(leaf["serial"], s.trim().trim_start_matches("serial="));
    // Dates as openssl prints them (nginx's $ssl_client_v_end format).
    let end = w
        .cmd("openssl", &["x509", "-in", "c1.crt", "-noout", "-enddate"])
        .ok();
    assert_eq!(
        leaf["not_after_openssl"],
        end.trim().trim_start_matches("notAfter=")
    );
    let text = w.mg(&["cert", "inspect", "c1.crt"]).ok();
    assert!(text.contains("Remaining:    6d 23h"), "{text}");
    assert!(
        text.contains("SANs:         DNS:dev1.d.example.local, URI:spiffe://example.org/d/1"),
        "{text}"
    );
}

#[test]
fn rfc2253_subject_matches_openssl_for_awkward_names() {
    let w = Work::new();
    w.cmd("openssl", &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "2", "-utf8",
        "-subj", "/C=SE/O=Acme, Inc./OU=Fleet+L=Lund/CN=J\u{e9}r\u{f4}me #1/emailAddress=ops@example.com",
    ]).ok();
    let want = w
        .cmd(
            "openssl",
            &[
                "x509", "-in", "c.pem", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        )
        .ok();
    let want = want.trim().trim_start_matches("subject=").to_string();
    let j = w.mg(&["cert", "inspect", "c.pem", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(v["subject"].as_str(), Some(want.as_str()));
}

#[test]
fn corrupt_and_missing_inputs_get_clear_errors() {
    let w = Work::new();
    w.with_ca();
    w.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
    );
    let err = w.mg(&["cert", "inspect", "garbage.pem"]).fails();
    assert!(err.contains("garbage.pem is not valid PEM"), "{err}");
    let err = w.mg(&["cert", "inspect", "nope.pem"]).fails();
    assert!(
        err.contains("cannot read nope.pem: No such file or directory"),
        "{err}"
    );
    w.write("text.txt", "just words\n");
    let err = w
        .mg(&["cert", "verify", "text.txt", "--ca", "mtlsgate-ca/ca.crt"])
        .fails();
    assert!(
        err.contains("text.txt is not valid PEM: no `-----BEGIN` line found"),
        "{err}"
    );
    w.mg(&["cert", "issue", "client", "c1"]).ok();
    w.write("key-as-cert.pem", &w.read("c1.key"));
    let err = w.mg(&["cert", "inspect", "key-as-cert.pem"]).fails();
    assert!(
        err.contains("key-as-cert.pem holds no certificate"),
        "{err}"
    );
    // A corrupted CA key: the CA refuses to sign, and writes nothing.
    w.write(
        "mtlsgate-ca/intermediate.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let err = w.mg(&["cert", "issue", "client", "c9"]).fails();
    assert!(
        err.contains("intermediate.key: not a usable private key"),
        "{err}"
    );
    assert!(!w.path("c9.crt").exists() && !w.path("c9.key").exists());
}

mod verify {
    use crate::util::Work;

    fn ca() -> Work {
        let w = Work::new();
        w.with_ca();
        w
    }

    #[test]
    fn good_chain_verifies() {
        let w = ca();
        w.mg(&["cert", "issue", "client", "c1"]).ok();
        let out = w.mg(&["cert", "verify", "c1.crt", "--ca", "ca.crt"]).ok();
        assert!(
            out.starts_with("OK: CN=c1 is valid for TLS client authentication until"),
            "{out}"
        );
    }

    #[test]
    fn expired() {
        let w = ca();
        // Issue a 1-second certificate and let it lapse.
        w.mg(&["cert", "issue", "client", "c1", "--valid", "1s"])
            .ok();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let err = w
            .mg(&["cert", "verify", "c1.crt", "--ca", "ca.crt"])
            .fails();
        assert!(
            err.contains("c1.crt: expired: the certificate expired at 20"),
            "{err}"
        );
        assert!(err.contains(" ago)"), "{err}");
    }

    #[test]
    fn unknown_issuer_and_missing_intermediate() {
        let w = ca();
        w.mg(&["cert", "issue", "client", "c1"]).ok();
        // Only the leaf, checked against the root alone: the intermediate is missing.
        let leaf = w.read("c1.crt");
        let first = leaf
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .expect("leaf")
            .to_string();
        w.write("leaf-only.crt", &first);
        let err = w
            .mg(&[
                "cert",
                "verify",
                "leaf-only.crt",
                "--ca",
                "mtlsgate-ca/root.crt",
            ])
            .fails();
        assert!(err.contains("unknown issuer: the certificate was issued by CN=mtlsgate Intermediate CA,O=mtlsgate, which is neither in the file nor in the CA bundle; the intermediate certificate is missing"), "{err}");
        // With the intermediate in the file, it verifies against the root alone.
        w.mg(&["cert", "verify", "c1.crt", "--ca", "mtlsgate-ca/root.crt"])
            .ok();
        // A different CA entirely.
        let other = Work::new();
        other.mg(&["ca", "init", "--name", "Other"]).ok();
        let err = w
            .mg(&[
                "cert",
                "verify",
                "c1.crt",
                "--ca",
                &other.path("mtlsgate-ca/ca.crt").display().to_string(),
            ])
            .fails();
        assert!(err.contains("unknown issuer"), "{err}");
        assert!(err.contains("CN=mtlsgate Root CA,O=mtlsgate"), "{err}");
    }

    #[test]
    fn wrong_eku() {
        let w = ca();
        w.mg(&["cert", "issue", "server", "localhost"]).ok();
        let err = w
            .mg(&[
                "cert",
                "verify",
                "localhost.crt",
                "--ca",
                "ca.crt",
                "--purpose",
                "client",
            ])
            .fails();
        assert!(err.contains("wrong EKU: the certificate may be used for serverAuth but not for TLS client authentication"), "{err}");
        w.mg(&[
            "cert",
            "verify",
            "localhost.crt",
            "--ca",
            "ca.crt",
            "--purpose",
            "server",
        ])
        .ok();
    }

    #[test]
    fn revoked() {
        let w = ca();
        w.mg(&["cert", "issue", "client", "c1"]).ok();
        w.mg(&[
            "ca",
            "revoke",
            "--cert",
            "c1.crt",
            "--reason",
            "keyCompromise",
        ])
        .ok();
        w.mg(&["ca", "crl", "--out", "crl.pem"]).ok();
        let err = w
            .mg(&[
                "cert", "verify", "c1.crt", "--ca", "ca.crt", "--crl", "crl.pem",
            ])
            .fails();
        assert!(err.contains("revoked: CN=c1 (serial "), "{err}");
        assert!(err.contains("was revoked at 20"), "{err}");
        assert!(err.contains("(reason: keyCompromise)"), "{err}");
    }

    #[test]
    fn key_too_small() {
        let w = ca();
        // A 1024-bit leaf signed by our intermediate with openssl itself (as the openssl tutorial does).
        w.cmd(
            "openssl",
            &[
                "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", "w.key", "-subj",
                "/CN=weak", "-out", "w.csr",
            ],
        )
        .ok();
        w.write(
            "ext.cnf",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        );
        w.cmd(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "w.csr",
                "-CA",
                "mtlsgate-ca/intermediate.crt",
                "-CAkey",
                "mtlsgate-ca/intermediate.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "w.crt",
            ],
        )
        .ok();
        let err = w
            .mg(&["cert", "verify", "w.crt", "--ca", "mtlsgate-ca/ca.crt"])
            .fails();
        assert!(
            err.contains(
                "key too small: CN=weak has a 1024-bit RSA key; at least 2048 bits are required"
            ),
            "{err}"
        );
    }

    #[test]
    fn ca_certificate_used_as_leaf() {
        let w = ca();
        let err = w
            .mg(&[
                "cert",
                "verify",
                "mtlsgate-ca/intermediate.crt",
                "--ca",
                "mtlsgate-ca/root.crt",
            ])
            .fails();
        assert!(err.contains("CA certificate used as a leaf: CN=mtlsgate Intermediate CA,O=mtlsgate is a CA certificate"), "{err}");
    }

    #[test]
    fn self_signed_not_in_bundle_and_pinned_when_in_bundle() {
        let w = ca();
        // A self-signed client certificate made with openssl req -x509 (CA:TRUE).
        w.cmd(
            "openssl",
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "9999",
                "-newkey",
                "rsa:2048",
                "-keyout",
                "client.key",
                "-out",
                "client.crt",
                "-subj",
                "/CN=pinned-client",
            ],
        )
        .ok();
        let err = w
            .mg(&["cert", "verify", "client.crt", "--ca", "mtlsgate-ca/ca.crt"])
            .fails();
        assert!(
            err.contains("self-signed: CN=pinned-client signed itself and is not in the CA bundle"),
            "{err}"
        );
        // Named as the bundle itself, it is trusted as it is (nginx's behaviour).
        w.mg(&["cert", "verify", "client.crt", "--ca", "client.crt"])
            .ok();
    }
}

/// Certificates made the way the openssl private-CA tutorial makes them: `openssl x509 -req` without an extension
/// file, which gives X.509 v1 certificates, all with serial 01.
mod openssl_v1 {
    use crate::util::Work;

    const PASS: &str = "pass:tutorial";

    /// An OpenSSL CA (`openssl req -x509`) and its `openssl ca` configuration (a database
    /// and a crlnumber file, so `openssl ca -gencrl` writes a v2 CRL with a CRL number).
    fn openssl_ca(w: &Work, name: &str) {
        w.cmd(
            "openssl",
            &[
                "genrsa", "-des3", "-passout", PASS, "-out", "ca.key", "2048",
            ],
        )
        .ok();
        w.cmd(
            "openssl",
            &[
                "req",
                "-new",
                "-x509",
                "-days",
                "365",
                "-key",
                "ca.key",
                "-passin",
                PASS,
                "-subj",
                &format!("/CN={name}"),
                "-out",
                "ca.crt",
            ],
        )
        .ok();
        w.write(
            "ca.cnf",
            "[ ca ]\ndefault_ca = CA_default\n\
             [ CA_default ]\ndir = .\ndatabase = index.txt\ncrlnumber = crlnumber\nserial = serial\n\
             new_certs_dir = newcerts\ndefault_md = sha256\ndefault_crl_days = 30\n\
             policy = policy_any\nunique_subject = no\n\
             [ policy_any ]\ncommonName = supplied\n",
        );
        w.write("index.txt", "");
        w.write("crlnumber", "1000\n");
        w.write("serial", "10\n");
        std::fs::create_dir(w.path("newcerts")).expect("newcerts");
    }

    /// `NAME.key` (RSA 2048, -des3), `NAME.csr` and the v1 `NAME.crt` with serial 01.
    fn v1_cert(w: &Work, name: &str, cn: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        w.cmd(
            "openssl",
            &["genrsa", "-des3", "-passout", PASS, "-out", &key, "2048"],
        )
        .ok();
        w.cmd(
            "openssl",
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-passin",
                PASS,
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &csr,
            ],
        )
        .ok();
        w.cmd(
            "openssl",
            &[
                "x509",
                "-req",
                "-days",
                "365",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-passin",
                PASS,
                "-set_serial",
                "01",
                "-out",
                &crt,
            ],
        )
        .ok();
        let text = w
            .cmd("openssl", &["x509", "-in", &crt, "-noout", "-text"])
            .ok();
        assert!(text.contains("Version: 1 (0x0)"), "{text}");
    }

    #[test]
    fn v1_client_certificate_verifies_as_with_openssl_and_inspects() {
        let w = Work::new();
        openssl_ca(&w, "Tutorial CA");
        v1_cert(&w, "client", "client");
        // OpenSSL accepts it (nginx's $ssl_client_verify would be SUCCESS) …
        let o = w
            .cmd("openssl", &["verify", "-CAfile", "ca.crt", "client.crt"])
            .ok();
        assert!(o.contains("client.crt: OK"), "{o}");
        // … and so does mtlsgate, for either purpose: a v1 certificate has no EKU.
        let out = w
            .mg(&["cert", "verify", "client.crt", "--ca", "ca.crt"])
            .ok();
        assert!(
            out.starts_with("OK: CN=client is valid for TLS client authentication until"),
            "{out}"
        );
        w.mg(&[
            "cert",
            "verify",
            "client.crt",
            "--ca",
            "ca.crt",
            "--purpose",
            "server",
        ])
        .ok();
        let text = w.mg(&["cert", "inspect", "client.crt"]).ok();
        assert!(text.contains("Subject:      CN=client"), "{text}");
        assert!(text.contains("Issuer:       CN=Tutorial CA"), "{text}");
        assert!(text.contains("Serial:       01"), "{text}");
        assert!(text.contains("Key:          RSA (2048 bits)"), "{text}");
        assert!(text.contains("EKU:          (none: any purpose)"), "{text}");
        assert!(text.contains("Version:      1 (no extensions"), "{text}");
        let j = w.mg(&["cert", "inspect", "client.crt", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert_eq!(v["version"], 1);
        assert_eq!(v["device_id"], "client");
        assert_eq!(v["dns_names"], serde_json::json!([]));
    }

    #[test]
    fn expired_and_foreign_v1_certificates_are_refused() {
        let w = Work::new();
        openssl_ca(&w, "Tutorial CA");
        // `openssl ca` without an extension section also makes v1 certificates, and it
        // takes explicit dates.
        w.cmd(
            "openssl",
            &[
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "old.key", "-subj",
                "/CN=old", "-out", "old.csr",
            ],
        )
        .ok();
        w.cmd(
            "openssl",
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                "ca.cnf",
                "-keyfile",
                "ca.key",
                "-cert",
                "ca.crt",
                "-passin",
                PASS,
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
                "-in",
                "old.csr",
                "-out",
                "old.crt",
            ],
        )
        .ok();
        let text = w
            .cmd("openssl", &["x509", "-in", "old.crt", "-noout", "-text"])
            .ok();
        assert!(text.contains("Version: 1 (0x0)"), "{text}");
        let err = w
            .mg(&["cert", "verify", "old.crt", "--ca", "ca.crt"])
            .fails();
        assert!(
            err.contains("old.crt: expired: the certificate expired at 2020-02-01 00:00:00 UTC ("),
            "{err}"
        );
        // A v1 certificate of another CA.
        let other = Work::new();
        openssl_ca(&other, "Other CA");
        v1_cert(&other, "client", "client");
        std::fs::copy(other.path("client.crt"), w.path("foreign.crt")).expect("copy");
        let err = w
            .mg(&["cert", "verify", "foreign.crt", "--ca", "ca.crt"])
            .fails();
        assert!(
            err.contains("foreign.crt: unknown issuer: the certificate was issued by CN=Other CA, which is neither in the file nor in the CA bundle"),
            "{err}"
        );
        // The same certificate signed by a CA of the same name but another key.
        let twin = Work::new();
        openssl_ca(&twin, "Tutorial CA");
        v1_cert(&twin, "client", "client");
        std::fs::copy(twin.path("client.crt"), w.path("twin.crt")).expect("copy");
        let err = w
            .mg(&["cert", "verify", "twin.crt", "--ca", "ca.crt"])
            .fails();
        assert!(
            err.contains("twin.crt: bad signature: the signature on CN=client does not verify with its issuer's key"),
            "{err}"
        );
    }

    #[test]
    fn a_crl_entry_for_serial_01_revokes_server_and_client_alike() {
        let w = Work::new();
        openssl_ca(&w, "Tutorial CA");
        v1_cert(&w, "server", "localhost");
        v1_cert(&w, "client", "client");
        // Revoke "the client" the way `openssl ca -revoke` records it: by serial.
        w.write(
            "index.txt",
            "R\t300101000000Z\t240101000000Z,keyCompromise\t01\tunknown\t/CN=client\n",
        );
        w.cmd(
            "openssl",
            &[
                "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt",
                "-passin", PASS, "-out", "crl.pem",
            ],
        )
        .ok();
        let crl = w
            .cmd("openssl", &["crl", "-in", "crl.pem", "-noout", "-text"])
            .ok();
        assert!(crl.contains("Version 2"), "{crl}");
        assert!(crl.contains("X509v3 CRL Number"), "{crl}");
        // OpenSSL (and so nginx) matches on issuer + serial: both are revoked.
        for c in ["server.crt", "client.crt"] {
            let r = w.cmd(
                "openssl",
                &[
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    "ca.crt",
                    "-CRLfile",
                    "crl.pem",
                    c,
                ],
            );
            assert_ne!(r.code, 0, "{c}");
            assert!(
                format!("{}{}", r.stdout, r.stderr).contains("certificate revoked"),
                "{}{}",
                r.stdout,
                r.stderr
            );
        }
        for (c, cn) in [("server.crt", "localhost"), ("client.crt", "client")] {
            let err = w
                .mg(&["cert", "verify", c, "--ca", "ca.crt", "--crl", "crl.pem"])
                .fails();
            assert!(
                err.contains(&format!(
                    "{c}: revoked: CN={cn} (serial 01) was revoked at 2024-01-01 00:00:00 UTC (reason: keyCompromise); a CRL entry names an issuer and a serial, so every certificate this issuer signed with serial 01 is revoked with it (openssl x509 -set_serial reuses serials; give each certificate its own)"
                )),
                "{err}"
            );
        }
        // Without the CRL both verify.
        w.mg(&["cert", "verify", "server.crt", "--ca", "ca.crt"])
            .ok();
    }
}

#[test]
fn sign_keeps_the_csr_subject_verbatim() {
    let w = Work::new();
    w.with_ca();
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
            "dev9.key",
            "-subj",
            "/C=SE/O=Acme+OU=R&D/OU=Fleet/OU=Ops/CN=dev9.d.example.local",
            "-multivalue-rdn",
            "-out",
            "dev9.csr",
        ],
    )
    .ok();
    w.mg(&[
        "cert", "sign", "dev9.csr", "--kind", "client", "--out", "dev9.crt",
    ])
    .ok();
    let want = w
        .cmd(
            "openssl",
            &[
                "req", "-in", "dev9.csr", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        )
        .ok();
    let got = w
        .cmd(
            "openssl",
            &[
                "x509", "-in", "dev9.crt", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        )
        .ok();
    assert_eq!(
        want.trim(),
        "subject=CN=dev9.d.example.local,OU=Ops,OU=Fleet,O=Acme+OU=R&D,C=SE"
    );
    assert_eq!(got.trim(), want.trim());
    // Byte for byte: the DER of the names is the same too.
    let der_of = |args: &[&str]| -> Vec<u8> {
        let r = w.cmd("openssl", args).ok();
        r.into_bytes()
    };
    let csr_hash = der_of(&[
        "req",
        "-in",
        "dev9.csr",
        "-noout",
        "-subject",
        "-nameopt",
        "oneline,dump_der,dump_all",
    ]);
    let crt_hash = der_of(&[
        "x509",
        "-in",
        "dev9.crt",
        "-noout",
        "-subject",
        "-nameopt",
        "oneline,dump_der,dump_all",
    ]);
    assert_eq!(csr_hash, crt_hash);
    let v = w
        .cmd(
            "openssl",
            &[
                "verify",
                "-CAfile",
                "mtlsgate-ca/ca.crt",
                "-untrusted",
                "dev9.crt",
                "-purpose",
                "sslclient",
                "dev9.crt",
            ],
        )
        .ok();
    assert!(v.contains("dev9.crt: OK"), "{v}");
    let j = w.mg(&["cert", "inspect", "dev9.crt", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(
        v[0]["subject"],
        "CN=dev9.d.example.local,OU=Ops,OU=Fleet,O=Acme+OU=R&D,C=SE"
    );
    assert_eq!(
        v[0]["organizational_units"],
        serde_json::json!(["R&D", "Fleet", "Ops"])
    );
}

#[test]
fn sign_and_issue_refuse_names_with_control_characters_or_another_device() {
    let w = Work::new();
    w.with_ca();
    let before = w.mg(&["ca", "list", "--json"]).ok();
    // A CN with a literal CR LF, as `openssl req -subj` takes it.
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
            "nl.key",
            "-subj",
            "/CN=dev1\r\nX-Device-Id: admin",
            "-out",
            "nl.csr",
        ],
    )
    .ok();
    let err = w
        .mg(&[
            "cert", "sign", "nl.csr", "--kind", "client", "--out", "nl.crt",
        ])
        .fails();
    assert!(
        err.contains("cannot sign nl.csr: the CSR's subject CN contains a control character (dev1\\r\\nX-Device-Id: admin): names with control characters (CR, LF, NUL, ESC, …) can forge log lines, headers and terminal output, so they are refused"),
        "{err}"
    );
    // A DNS SAN naming another device than the CN.
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
            "other.key",
            "-subj",
            "/CN=other.d.example.local",
            "-addext",
            "subjectAltName=DNS:dev1.d.example.local",
            "-out",
            "other.csr",
        ],
    )
    .ok();
    let err = w
        .mg(&[
            "cert",
            "sign",
            "other.csr",
            "--kind",
            "client",
            "--out",
            "other.crt",
        ])
        .fails();
    assert!(
        err.contains("cannot sign other.csr: the CSR's DNS SAN dev1.d.example.local names another device than its CN other.d.example.local; a client certificate names one device"),
        "{err}"
    );
    // The same CSR is fine for a server certificate: servers are not devices.
    w.mg(&[
        "cert",
        "sign",
        "other.csr",
        "--kind",
        "server",
        "--out",
        "srv.crt",
    ])
    .ok();
    // cert issue applies the same rule.
    let err = w
        .mg(&[
            "cert",
            "issue",
            "client",
            "c1",
            "--device-id",
            "dev2",
            "--dns",
            "dev1.d.example.local",
        ])
        .fails();
    assert!(
        err.contains("the DNS SAN dev1.d.example.local names another device than its CN dev2.d.example.local; a client certificate names one device"),
        "{err}"
    );
    assert!(!w.path("c1.crt").exists() && !w.path("c1.key").exists());
    let err = w
        .mg(&[
            "cert",
            "issue",
            "client",
            "c2",
            "--uri",
            "spiffe://example.org/\u{1b}[2J",
        ])
        .fails();
    assert!(
        err.contains("the URI SAN contains a control character (spiffe://example.org/\\x1b[2J)"),
        "{err}"
    );
    // Nothing refused was recorded: only the server certificate was added.
    let after = w.mg(&["ca", "list", "--json"]).ok();
    let rows = |j: &str| -> usize {
        serde_json::from_str::<serde_json::Value>(j)
            .expect("json")
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
    };
    assert_eq!(rows(&after), rows(&before) + 1);
}

#[test]
fn a_damaged_or_foreign_inventory_is_refused_and_nothing_is_written() {
    let w = Work::new();
    w.mg(&["ca", "init", "--dir", "ca"]).ok();
    w.mg(&["cert", "issue", "client", "c1", "--dir", "ca"]).ok();
    w.mg(&["ca", "revoke", "--cert", "c1.crt", "--dir", "ca"])
        .ok();
    let good = std::fs::read(w.path("ca/inventory.db")).expect("inventory");
    let other = Work::new();
    other.mg(&["ca", "init", "--dir", "ca"]).ok();
    other
        .mg(&["cert", "issue", "client", "x", "--dir", "ca"])
        .ok();
    let foreign = std::fs::read(other.path("ca/inventory.db")).expect("inventory");
    let restore = "restore it from a backup — mtlsgate will not start a new inventory over it, because that would forget every revocation";
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "emptied",
            Vec::new(),
            format!("the inventory ca/inventory.db is empty (0 bytes): it may have been truncated; {restore}"),
        ),
        (
            "cut in half",
            good[..good.len() / 2].to_vec(),
            "the inventory ca/inventory.db is truncated (".to_string(),
        ),
        (
            "overwritten",
            b"this is not a database\n".repeat(300),
            format!("the inventory ca/inventory.db is not an SQLite database (it does not start with SQLite's header: it was overwritten or damaged); {restore}"),
        ),
        (
            "another CA's",
            foreign,
            "ca/inventory.db does not belong to this CA (its root certificate serial ".to_string(),
        ),
    ];
    for (what, bytes, message) in &cases {
        std::fs::write(w.path("ca/inventory.db"), bytes).expect("write");
        let top = w.listing(".");
        let ca = w.listing("ca");
        for args in [
            vec!["ca", "list", "--dir", "ca"],
            vec!["cert", "issue", "client", "c2", "--dir", "ca"],
            vec!["ca", "crl", "--dir", "ca", "--out", "crl.pem"],
            vec!["ca", "revoke", "ABCDEF", "--dir", "ca"],
        ] {
            let err = w.mg(&args).fails();
            assert!(
                err.contains(message.as_str()),
                "{what} inventory, {args:?}:\n{err}"
            );
            assert_eq!(w.listing("."), top, "{what}, {args:?}");
            assert_eq!(w.listing("ca"), ca, "{what}, {args:?}");
            assert_eq!(
                &std::fs::read(w.path("ca/inventory.db")).expect("read"),
                bytes,
                "{what}, {args:?}"
            );
        }
    }
    // Restored from the backup, the CA remembers its revocation again.
    std::fs::write(w.path("ca/inventory.db"), &good).expect("restore");
    let list = w.mg(&["ca", "list", "--dir", "ca"]).ok();
    assert!(
        list.lines()
            .any(|l| l.contains("revoked") && l.contains("CN=c1")),
        "{list}"
    );
    w.mg(&["ca", "crl", "--dir", "ca", "--out", "crl.pem"]).ok();
    let err = w
        .mg(&[
            "cert", "verify", "c1.crt", "--ca", "ca.crt", "--crl", "crl.pem",
        ])
        .fails();
    assert!(err.contains("revoked: CN=c1"), "{err}");
}

#[test]
fn the_same_name_issued_ten_times_at_once_is_issued_once() {
    let w = Work::new();
    w.with_ca();
    let children: Vec<std::process::Child> = (0..10)
        .map(|_| {
            std::process::Command::new(crate::util::BIN)
                .args(["cert", "issue", "client", "same", "--device-id", "same"])
                .current_dir(w.root())
                .env_remove("MTLSGATE_CA_DIR")
                .env_remove("MTLSGATE_CA_PASSPHRASE_FILE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut ok = 0;
    for c in children {
        let o = c.wait_with_output().expect("wait");
        if o.status.success() {
            ok += 1;
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("already exists: refusing to overwrite it"),
                "{err}"
            );
        }
    }
    assert_eq!(ok, 1, "exactly one process issues `same`");
    let json = w.mg(&["ca", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let clients: Vec<&serde_json::Value> = v
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["kind"] == "client")
        .collect();
    assert_eq!(clients.len(), 1, "{json}");
    assert_eq!(clients[0]["device_id"], "same.d.example.local");
    // The certificate on disk is the recorded one, and matches the key on disk.
    let fp = w
        .cmd(
            "openssl",
            &[
                "x509",
                "-in",
                "same.crt",
                "-noout",
                "-fingerprint",
                "-sha256",
            ],
        )
        .ok();
    let fp = fp
        .trim()
        .split('=')
        .nth(1)
        .expect("fp")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(clients[0]["sha256"], fp.as_str());
    let a = w
        .cmd("openssl", &["x509", "-in", "same.crt", "-noout", "-pubkey"])
        .ok();
    let b = w
        .cmd("openssl", &["pkey", "-in", "same.key", "-pubout"])
        .ok();
    assert_eq!(a, b);
    assert_eq!(
        w.listing("."),
        vec!["ca.crt", "mtlsgate-ca", "same.crt", "same.key"]
    );
}

/// A `ca init` killed mid-way leaves its staging directory behind; the next `ca init` in
/// the same place removes it (its builder is gone) and leaves a live one alone.
#[test]
fn init_removes_staging_directories_of_killed_runs() {
    let w = Work::new();
    std::fs::create_dir_all(w.path(".mtlsgate-ca-init-dead")).expect("mkdir");
    // A process that has exited: its PID names nobody now.
    let gone = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("true");
    w.write(".mtlsgate-ca-init-dead/.owner", &gone.to_string());
    w.write(".mtlsgate-ca-init-dead/root.key", "half a key");
    std::fs::create_dir_all(w.path(".mtlsgate-ca-init-live")).expect("mkdir");
    w.write(
        ".mtlsgate-ca-init-live/.owner",
        &std::process::id().to_string(),
    );
    w.mg(&["ca", "init", "--dir", "ca"]).ok();
    assert!(
        !w.path(".mtlsgate-ca-init-dead").exists(),
        "{:?}",
        w.listing(".")
    );
    assert!(w.path(".mtlsgate-ca-init-live").exists());
    assert!(!w.path("ca/.owner").exists());
    assert!(w.path("ca/ca.toml").exists());
}

/// `cert verify --at` verifies as of another time, `--name` checks the server name the way
/// a TLS client does (subject alternative names only); OpenSSL agrees on the same files.
#[test]
fn cert_verify_at_a_time_and_for_a_name() {
    let w = Work::new();
    w.with_ca();
    w.mg(&[
        "cert",
        "issue",
        "server",
        "api",
        "--dns",
        "api.example.com",
        "--ip",
        "10.1.2.3",
        "--valid",
        "30d",
        "--out",
        ".",
    ])
    .ok();
    let verify = |extra: &[&str]| {
        let mut args = vec!["cert", "verify", "api.crt", "--ca", "mtlsgate-ca/ca.crt"];
        args.extend_from_slice(extra);
        w.mg(&args)
    };
    let openssl = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "-CAfile",
            "mtlsgate-ca/ca.crt",
            "-purpose",
            "sslserver",
        ];
        args.extend_from_slice(extra);
        args.push("api.crt");
        w.cmd("openssl", &args)
    };

    // --name: a DNS SAN and an IP SAN match (and imply --purpose server); another name
    // does not, and the refusal says which names the certificate has.
    let out = verify(&["--name", "api.example.com"]).ok();
    assert!(
        out.starts_with(
            "OK: CN=api is valid for TLS server authentication for api.example.com until "
        ),
        "{out}"
    );
    openssl(&["-verify_hostname", "api.example.com"]).ok();
    let out = verify(&["--name", "10.1.2.3"]).ok();
    assert!(out.contains(" for 10.1.2.3 until "), "{out}");
    openssl(&["-verify_ip", "10.1.2.3"]).ok();
    let err = verify(&["--name", "other.example.com"]).fails();
    assert!(
        err.contains("the certificate is not valid for other.example.com: it names only DNS:api.example.com, IP:10.1.2.3"),
        "{err}"
    );
    openssl(&["-verify_hostname", "other.example.com"]).fails();
    // The CN is not a name a client checks.
    verify(&["--name", "api"]).fails();

    // --at, as Unix seconds and as RFC 3339: inside the validity it passes, after it the
    // certificate has expired, before it it is not yet valid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let tomorrow = (now + 86_400).to_string();
    let out = verify(&["--at", &tomorrow, "--purpose", "server"]).ok();
    assert!(out.contains("left at that time)"), "{out}");
    openssl(&["-attime", &tomorrow]).ok();
    let in_60_days = (now + 60 * 86_400).to_string();
    let err = verify(&["--at", &in_60_days, "--purpose", "server"]).fails();
    assert!(
        err.contains("expired: the certificate expired at "),
        "{err}"
    );
    let err = openssl(&["-attime", &in_60_days]).fails();
    assert!(err.contains("certificate has expired"), "{err}");
    let err = verify(&["--at", "2000-01-01T00:00:00Z", "--purpose", "server"]).fails();
    assert!(
        err.contains("not yet valid: CN=api becomes valid at "),
        "{err}"
    );
    let err = verify(&[
        "--at",
        "2100-01-01T00:00:00+02:00",
        "--name",
        "api.example.com",
    ])
    .fails();
    assert!(err.contains("expired: "), "{err}");

    // Bad values: one sentence naming the flag and the accepted forms, non-zero exit.
    for bad in ["yesterday", "2030-13-01T00:00:00Z", "-5", "2030-01-31"] {
        let err = verify(&[&format!("--at={bad}")]).fails();
        assert!(
            err.contains(&format!("invalid --at `{bad}`: expected an RFC 3339 time such as 2030-01-31T12:00:00Z, or Unix seconds")),
            "{bad}: {err}"
        );
    }
    let err = verify(&["--name", "bad name!"]).fails();
    assert!(
        err.contains(
            "invalid --name `bad name!`: expected a DNS name (server.example.com) or an IP address"
        ),
        "{err}"
    );
}

/// A passphrase asked for at a terminal (a real one: tmux), as openssl does: `ca init
/// --encrypt` asks twice with echo off and encrypts the keys; `cert issue` then asks once.
/// Without a terminal the command says how to give the passphrase instead.
#[test]
fn an_encrypted_ca_asks_for_its_passphrase_at_a_terminal() {
    use std::time::{Duration, Instant};
    let w = Work::new();
    let sock = format!("mtlsgate-test-{}", std::process::id());
    let sock = format!("{sock}-{}", w.root().display().to_string().len());
    let tmux = |args: &[&str]| {
        let mut a = vec!["-L", sock.as_str()];
        a.extend_from_slice(args);
        w.cmd("tmux", &a)
    };
    let screen = || tmux(&["capture-pane", "-p", "-t", "t"]).stdout;
    let wait_screen = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let root = w.root().display().to_string();
    let cmd = format!(
        "cd {root} && {} ca init --dir ca --encrypt; echo EXIT=$?; sleep 60",
        crate::util::bin()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "200",
        "-y",
        "50",
        &cmd,
    ])
    .ok();
    wait_screen("New passphrase for the CA keys in ca:");
    tmux(&["send-keys", "-t", "t", "s3cret-words", "Enter"]).ok();
    wait_screen("The same passphrase again:");
    tmux(&["send-keys", "-t", "t", "s3cret-words", "Enter"]).ok();
    let s = wait_screen("EXIT=");
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(
        !s.contains("s3cret-words"),
        "the passphrase was echoed:\n{s}"
    );
    let key = std::fs::read_to_string(w.path("ca/intermediate.key")).expect("key");
    assert!(key.contains("ENCRYPTED PRIVATE KEY"), "{key}");
    tmux(&["kill-server"]);

    // No terminal: the way to give it, and nothing issued.
    let e = w
        .mg(&[
            "cert", "issue", "client", "dev1", "--dir", "ca", "--out", ".",
        ])
        .fails();
    assert!(
        e.contains("give their passphrase with --passphrase-file FILE")
            && e.contains("run the command at a terminal to be asked for it"),
        "{e}"
    );
    assert!(!w.path("dev1.crt").exists());

    let cmd = format!(
        "cd {root} && {} cert issue client dev1 --dir ca --out .; echo EXIT=$?; sleep 60",
        crate::util::bin()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "200",
        "-y",
        "50",
        &cmd,
    ])
    .ok();
    wait_screen("Passphrase for the CA keys in ca:");
    tmux(&["send-keys", "-t", "t", "s3cret-words", "Enter"]).ok();
    let s = wait_screen("EXIT=");
    tmux(&["kill-server"]);
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(
        !s.contains("s3cret-words"),
        "the passphrase was echoed:\n{s}"
    );
    assert!(w.path("dev1.crt").exists());
}
