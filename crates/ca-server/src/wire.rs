//! The JSON bodies of the HTTP API: the contract's own types (`mtlsgate-contract`), which
//! the clients read — re-exported here so that the server's code and its users keep one
//! name for them. Answers that are inventory records (`Device`, a device with its audit
//! trail) are the authority's records, serialised as they are.

pub use mtlsgate_contract::wire::*;
