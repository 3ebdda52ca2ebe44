//! The stream: the records a window produces ([`records`]), which the model consumes and
//! the trace file holds ([`tracefile`]), or the flight recorder's ring keeps ([`flight`]).

pub mod flight;
pub mod output;
pub mod records;
pub mod tracefile;

pub use records::{EndRecord, EndedBy, MetaRecord, Rec, TargetInfo};
