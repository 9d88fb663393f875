//! The reconcile runtime: what triggers reconciles (store watch, Docker
//! events, periodic resync), the queue that de-duplicates and paces them, and
//! the loop that runs a kind's reconciler and writes status back.

pub mod queue;

pub use queue::{Action, Backoff, QueueConfig, QueueStats, Scheduler};
pub mod controller;
pub mod events;

pub use controller::{Context, ReconcileError, Reconciler, Settings};
