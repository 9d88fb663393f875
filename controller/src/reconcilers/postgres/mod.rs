//! PostgresCluster: PostgreSQL run by Patroni, an etcd cluster as Patroni's
//! consensus store, and HAProxy routers for read-write and read-only
//! endpoints.

pub mod backup;
mod diverged;
pub mod etcd;
pub mod logins;
pub mod observe;
mod passwords;
mod patroni;
mod placement;
pub mod reconcile;
pub mod render;
pub mod report;
pub mod rotate;
mod switchover;

pub use reconcile::PostgresClusters;
