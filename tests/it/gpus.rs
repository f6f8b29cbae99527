//! Integration tests: gpus.
