//! Request paths: routes are matched on the normalised path and the upstream receives that
//! same path, so no spelling of a path reaches a route its client is not allowed on.
//! Every variant goes over HTTP/1.1 and HTTP/2 (`curl --path-as-is` sends it unchanged).

use crate::util::*;

/// `/admin/` is dev1's, `/api/` maps to the upstream's `/app/` and is dev2's, `/` is dev2's.
fn routes(w: &Work, up: &Upstream) -> Gate {
    w.write(
        "gate.toml",
        &format!(
            r#"[server]
listen = "127.0.0.1:0"
cert = "localhost.crt"
key = "localhost.key"
client_ca = "ca.crt"

[[route]]
prefix = "/admin/"
upstream = "{u}"
allow_device_ids = ["dev1.d.example.local"]

[[route]]
prefix = "/api/"
upstream = "{u}/app/"
allow_device_ids = ["dev2.d.example.local"]

[[route]]
prefix = "/"
upstream = "{u}"
allow_device_ids = ["dev2.d.example.local"]
"#,
            u = up.url()
        ),
    );
    Gate::start(w, &["serve", "--config", "gate.toml"])
}

fn get_raw(w: &Work, g: &Gate, dev: &str, path: &str, http2: bool) -> (u16, String) {
    let mut a = as_dev(dev);
    a.push("--path-as-is".into());
    a.push(if http2 { "--http2" } else { "--http1.1" }.into());
    a.push(g.url(path));
    curl(w, &s(&a))
}

fn upstream_path(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["path"].as_str().unwrap_or_default().to_string()
}

const ADMIN_SPELLINGS: &[&str] = &[
    "/admin/secret.txt",
    "/%61dmin/secret.txt",
    "/%61%64%6d%69%6e/secret.txt",
    "//admin/secret.txt",
    "///admin//secret.txt",
    "/./admin/secret.txt",
    "/public.txt/../admin/secret.txt",
    "/x/y/../../admin/secret.txt",
    "/%2e/admin/secret.txt",
    "/public/%2e%2e/admin/secret.txt",
    "/public/.%2E/admin/secret.txt",
    "/admin/./secret.txt",
    "/admin/secret%2etxt",
];

#[test]
fn every_spelling_of_a_path_meets_the_policy_of_the_route_it_names() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = routes(&w, &up);
    for http2 in [false, true] {
        for p in ADMIN_SPELLINGS {
            let (code, body) = get_raw(&w, &g, "dev2", p, http2);
            assert_eq!(code, 403, "dev2 reached {p} (http2: {http2}): {body}");
            assert!(
                body.contains("device dev2.d.example.local is not on the allowlist for /admin/"),
                "{p}: {body}"
            );
            let (code, body) = get_raw(&w, &g, "dev1", p, http2);
            assert_eq!(code, 200, "dev1 {p} (http2: {http2}): {body}");
            assert_eq!(upstream_path(&body), "/admin/secret.txt", "{p}");
        }
    }
}

#[test]
fn a_path_cannot_climb_out_of_a_rewritten_prefix() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = routes(&w, &up);
    for http2 in [false, true] {
        // Inside /api/: the prefix is replaced by the upstream's /app/.
        let (code, body) = get_raw(&w, &g, "dev2", "/api/x%20y?q=%2e%2e", http2);
        assert_eq!(code, 200, "{body}");
        assert_eq!(upstream_path(&body), "/app/x%20y?q=%2e%2e");
        // `..` leaves /api/ before routing: this is `/secret.txt`, the `/` route's, and the
        // upstream is asked for /secret.txt, never /app/../secret.txt.
        for p in [
            "/api/../secret.txt",
            "/api/%2e%2e/secret.txt",
            "/api/./../secret.txt",
        ] {
            let (code, body) = get_raw(&w, &g, "dev2", p, http2);
            assert_eq!(code, 200, "{p}: {body}");
            assert_eq!(upstream_path(&body), "/secret.txt", "{p}");
        }
        // dev1 may not use `/` even when the path starts with /admin/.
        let (code, _) = get_raw(&w, &g, "dev1", "/admin/../secret.txt", http2);
        assert_eq!(code, 403);
    }
}

#[test]
fn ambiguous_paths_are_refused_with_400_saying_why() {
    let w = Work::new();
    pki(&w);
    let up = Upstream::start(&w);
    let g = routes(&w, &up);
    for http2 in [false, true] {
        for (p, why) in [
            ("/admin%2fsecret.txt", "encoded slash"),
            ("/public/..%2fadmin/secret.txt", "encoded slash"),
            ("/admin%5csecret.txt", "backslash"),
            ("/admin;jsessionid=1/secret.txt", "path parameters"),
            ("/admin%3b/secret.txt", "path parameters"),
            ("/admin/secret%00.txt", "control character"),
            ("/../secret.txt", "climbs above the root"),
            ("/api/../../secret.txt", "climbs above the root"),
            ("/%2e%2e/admin/secret.txt", "climbs above the root"),
            ("/admin/%zz", "not followed by two hex digits"),
        ] {
            let (code, body) = get_raw(&w, &g, "dev2", p, http2);
            assert_eq!(code, 400, "{p} (http2: {http2}): {body}");
            assert!(body.contains(why), "{p}: {body}");
        }
    }
}
