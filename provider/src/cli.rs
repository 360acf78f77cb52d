//! The `provider` command line (parsed in `main.rs`, run here).
