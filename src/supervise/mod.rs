//! The supervisor: PID 1 duties, the engine's life as a state machine, restarts and fallbacks.
//!
//! OWNER: supervise helper.
