//! The live process: launching or finding it (`target`), the probes and their ring
//! (`probes`), its memory read-only (`memory`, `tasklist`, `sampler`, `await_chain`), the stack copies
//! of waker clones (`await_stack`), addresses resolved
//! against its binary (`locator`), the host kernel (`kernel`: its features, `kernel_btf`)
//! and clock (`clock`).

pub mod await_chain;
pub mod await_stack;
pub mod caps;
pub mod clock;
pub mod kernel;
pub mod kernel_btf;
pub mod locator;
pub mod maps;
pub mod memory;
pub mod probes;
pub mod sampler;
pub mod target;
pub mod tasklist;
