//! One integration test binary: every test starts the built `mtlsgate` and checks it
//! with real peers (openssl, curl, python). Tests use temporary directories and port 0,
//! so they run in parallel.

#[macro_use]
mod util;

mod ca;
mod dist;
mod fleet;
mod fleet_cli;
mod gateway;
mod messages;
