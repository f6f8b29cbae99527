//! `aim-engine healthcheck` and `status`. OWNER: http helper.
use crate::cli::{HealthcheckArgs, StatusArgs};

pub fn healthcheck(_a: &HealthcheckArgs) -> anyhow::Result<u8> {
    super::not_yet("healthcheck")
}
pub fn status(_a: &StatusArgs) -> anyhow::Result<u8> {
    super::not_yet("status")
}
