//! What a listener names and trusts: CA names in the CertificateRequest (each once, and
//! not those only trusted, as nginx's `ssl_trusted_certificate`).

use crate::util::*;

/// The "Acceptable client certificate CA names" that `openssl s_client` lists.
fn acceptable_ca_names(w: &Work, port: u16, servername: &str) -> Vec<String> {
    let out = w
        .cmd(
            "sh",
            &[
                "-c",
                &format!("openssl s_client -connect 127.0.0.1:{port} -servername {servername} -CAfile ca.crt </dev/null 2>&1"),
            ],
        )
        .stdout;
    let mut names = Vec::new();
    let mut on = false;
    for l in out.lines() {
        if l.starts_with("Acceptable client certificate CA names") {
            on = true;
            continue;
        }
        if on {
            if l.starts_with("Requested Signature Algorithms")
                || l.starts_with("Client Certificate Types")
                || l.trim().is_empty()
            {
                break;
            }
            names.push(l.trim().to_string());
        }
    }
    names
}

#[test]
fn trusted_but_not_advertised_cas_and_no_repeated_names() {
    let w = Work::new();
    pki(&w);
    foreign_client(&w, "Elsewhere", "x");
    let up = Upstream::start(&w);
    // The bundle twice (as a concatenated file often repeats a CA), another CA trusted only.
    let g = serve(
        &w,
        &up,
        &[
            "--client-ca",
            "ca.crt",
            "--trusted-ca",
            "other/ca.crt",
        ],
    );
    let names = acceptable_ca_names(&w, g.port, "localhost");
    assert_eq!(
        names,
        vec![
            "O = mtlsgate, CN = mtlsgate Root CA",
            "O = mtlsgate, CN = mtlsgate Intermediate CA"
        ],
        "each advertised CA once, the trusted one not at all"
    );
    // The trusted CA's client gets in all the same.
    let (code, body) = curl_as(&w, "o/x.crt", "o/x.key", &g.url("/"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(get_as(&w, &g, "dev1", "/", &[]).0, 200);
}
