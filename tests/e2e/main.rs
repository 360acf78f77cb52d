//! End-to-end flows: real processes, started the way a user starts them.

mod demo;
