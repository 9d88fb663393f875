//! haswarmd's library: the store, the API server, and the daemon's
//! configuration. The reconcilers join in later issues.

pub mod api;
pub mod client;
pub mod config;
pub mod metrics;
pub mod reconcilers;
pub mod runtime;
pub mod server;
pub mod store;
pub mod swarm;
