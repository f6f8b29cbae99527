//! `aim-engine gpus`. OWNER: gpu helper.
use crate::cli::{FormatArgs, GlobalArgs};

pub fn run(_g: &GlobalArgs, _a: &FormatArgs) -> anyhow::Result<u8> {
    super::not_yet("gpus")
}
