//! End-to-end flows: real processes, started the way a user starts them.

mod bench;
mod browser;
mod demo;
mod flows;
mod relay;
mod reorg;
mod shell;
