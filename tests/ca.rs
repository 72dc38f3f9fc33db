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
    assert_eq!(rows.len(), 4);
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["root", "intermediate", "client", "server"]);
    assert_eq!(rows[2]["device_id"], "dev1.d.example.local");
    let serial = rows[2]["serial"].as_str().expect("serial").to_string();
    w.mg(&["ca", "revoke", &serial, "--reason", "keyCompromise"])
        .ok();
    let table = w.mg(&["ca", "list"]).ok();
    let line = table.lines().find(|l| l.starts_with(&serial)).expect("row");
    assert!(
        line.contains("revoked") && line.contains("dev1.d.example.local"),
        "{line}"
    );
    let err = w.mg(&["ca", "revoke", &serial]).fails();
    assert!(err.contains("already revoked"), "{err}");
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
    // A CSR made as in seed 002, but with an adequate key.
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

    // Seed 002's 1024-bit key.
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
        // A 1024-bit leaf signed by our intermediate with openssl itself (as seed 002 does).
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
        // Seed 004: a self-signed client certificate made with openssl req -x509 (CA:TRUE).
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
                "/CN=seed004",
            ],
        )
        .ok();
        let err = w
            .mg(&["cert", "verify", "client.crt", "--ca", "mtlsgate-ca/ca.crt"])
            .fails();
        assert!(
            err.contains("self-signed: CN=seed004 signed itself and is not in the CA bundle"),
            "{err}"
        );
        // Named as the bundle itself, it is trusted as it is (nginx's behaviour).
        w.mg(&["cert", "verify", "client.crt", "--ca", "client.crt"])
            .ok();
    }
}
