//! Task reconstruction: one aggregator owns every task's state and rebuilds it from the
//! event stream; detectors and renderers only read it.

mod aggregator;
pub mod fold;
mod index;
mod poll_times;
mod task;
pub mod verdict;
pub mod view;

pub use aggregator::{Aggregator, Diagnostics};
pub use poll_times::PollTimes;
pub use task::{LongPoll, SiteSource, Stamp, Task, TaskKind, TaskState};

#[cfg(test)]
mod tests;
