//! tasktrace as a library: the stages of the data flow (`docs/design.md`, "Layout"), used
//! by the `tasktrace` binary (`main.rs`) and by the fuzz targets (`fuzz/`).

pub mod binary;
pub mod cmd;
pub mod error;
pub mod live;
pub mod model;
pub mod plan;
pub mod report;
pub mod stream;
pub mod tokio_versions;

#[cfg(test)]
mod layers;
