//! End-to-end fleet flows: `mtlsgate ca serve` with the real agent (`mtlsgate agent`),
//! the fleet commands through the admin API (`--server`), and real peers — curl, openssl
//! (`s_server`, `verify`, `crl`), jq, nginx, python, and PostgreSQL (the shared test
//! server, or one a test starts and stops itself). Flows marked with `both!` run on
//! SQLite and on PostgreSQL. Helpers live in tests/util.rs.

mod enroll;
mod est;
mod faults;
mod refusals;
mod renew;
mod revoke;
mod sync;
mod tidy;
