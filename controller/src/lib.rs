//! haswarmd's library: the store, the API server, the Swarm layer, the
//! reconcilers and the runtime that drives them, and the daemon's
//! configuration.

pub mod admission;
pub mod api;
pub mod client;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod reconcilers;
pub mod runtime;
pub mod server;
pub mod store;
pub mod swarm;
