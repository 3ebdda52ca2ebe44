//! The verbs, on top of every stage: `run`/`record` (a live `session`), `report` (a
//! `replay` of a trace file, or a `compare` of two windows), `inspect`, `dump`, `top` (a live view), and the command line they share.

pub mod agent;
pub mod awaits;
pub mod cli;
pub mod compare;
pub mod dump;
pub mod flight;
pub mod inspect;
pub mod replay;
pub mod serve;
pub mod session;
pub mod spawn_gate;
pub mod synth;
pub mod term;
pub mod top;
