//! SharedVolume.

pub mod reconcile;
pub mod render;

pub use reconcile::SharedVolumes;
