//! `aim-engine serve`. OWNER: supervise helper.
use crate::cli::{GlobalArgs, ServeArgs};

pub fn run(_g: &GlobalArgs, _a: ServeArgs) -> anyhow::Result<u8> {
    super::not_yet("serve")
}
