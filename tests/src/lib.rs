//! Helpers shared by the end-to-end flows in `e2e/`.
