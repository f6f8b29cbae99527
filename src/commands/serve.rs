//! `aim-engine serve MODEL [GPU_COUNT]`: plan as `plan` does (`plan::resolve`), then
//! supervise the engine until told to stop. The work is in `supervise::run`.

use crate::cli::{GlobalArgs, ServeArgs};

pub fn run(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<u8> {
    crate::supervise::run::serve(g, a)
}
