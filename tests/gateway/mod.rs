//! End-to-end tests of `mtlsgate serve` and `quickstart`, split by feature: the real
//! binary, driven by curl, `openssl s_client`, Python (`requests`, `ssl`, `h2`) and nginx,
//! in front of a real upstream (tests/peers/upstream.py). Helpers live in `crate::util`.

mod clients;
mod hardening;
mod identity;
mod inventory;
mod openssl_certificates;
mod operations;
mod paths;
mod refusals;
mod tunnels;
mod upstream_http;
mod upstream_tls;
mod vhosts;
mod walkthroughs;
