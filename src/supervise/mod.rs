//! The supervisor: PID 1 duties, the engine's life as a state machine, restarts and fallbacks.
//!
//! - `reaper`: the only `waitpid` caller; statuses go to whoever spawned the pid.
//! - `spawn`: the engine's environment (pure), session and signal state.
//! - `signals`: handlers for every signal we act on (PID 1 drops the others).
//! - `machine`: phases and the restart/fallback policy, pure and table-tested.
//! - `backoff`: exponential backoff and the restart budget (pure).
//! - `tree`: group kill and the sweep of every process left of the engine's tree.
//! - `vram`: waiting for VRAM to come back before a relaunch.
//! - `logs`: the engine's output copied through unchanged, and its tail kept.
//! - `probe`: health, model list and test inference over loopback HTTP.
//! - `run`: `serve` from the runtime up: the public port, planning, then the supervisor.
//! - `supervisor`: the run over a plan's launches; carries out the policy's decisions.
//! - `attempt`: one engine attempt from spawn to its end (`next_event` / `handle_event`).
//! - `gpu_fault`: the GPU fault judge (pure): rising uncorrectable RAS counts, resets, a GPU
//!   gone, against the attempt's start.

mod attempt;
pub mod backoff;
mod fetch;
pub mod gpu_fault;
pub mod group;
pub mod logs;
pub mod machine;
pub mod probe;
pub mod progress;
pub mod reaper;
pub mod run;
pub mod signals;
pub mod spawn;
mod supervisor;
pub mod tree;
pub mod vram;
