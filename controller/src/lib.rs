//! haswarmd's library: the store, the API server, and the daemon's
//! configuration. The reconcilers join in later issues.

pub mod api;
pub mod client;
pub mod config;
pub mod server;
pub mod store;
