//! `aim-engine launch`, `list`, `stop`. OWNER: host helper.
use crate::cli::{FormatArgs, GlobalArgs, LaunchArgs, StopArgs};

pub fn launch(_g: &GlobalArgs, _a: LaunchArgs) -> anyhow::Result<u8> {
    super::not_yet("launch")
}
pub fn list(_g: &GlobalArgs, _a: &FormatArgs) -> anyhow::Result<u8> {
    super::not_yet("list")
}
pub fn stop(_g: &GlobalArgs, _a: &StopArgs) -> anyhow::Result<u8> {
    super::not_yet("stop")
}
