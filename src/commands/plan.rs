//! `aim-engine plan`, `dry-run`, `recipes`. OWNER: recipe helper.
//! CONTRACT: `resolve` is used by `serve` and `launch`.
use crate::cli::{GlobalArgs, PlanArgs, SelectArgs};
use crate::plan::Plan;

/// Detects, loads and selects: the plan `serve` and `launch` act on.
pub fn resolve(_g: &GlobalArgs, _select: &SelectArgs, _public_port: u16) -> anyhow::Result<Plan> {
    Err(crate::exit::ExitError::new(crate::exit::FAILURE, "planning is not implemented yet").into())
}

pub fn plan(_g: &GlobalArgs, _a: &PlanArgs) -> anyhow::Result<u8> {
    super::not_yet("plan")
}
pub fn dry_run(_g: &GlobalArgs, _a: &PlanArgs) -> anyhow::Result<u8> {
    super::not_yet("dry-run")
}
pub fn recipes(_g: &GlobalArgs, _a: &PlanArgs) -> anyhow::Result<u8> {
    super::not_yet("recipes")
}
