//! What AMD's AIM containers ask of planning, in one place: AIM_ID (the recipe folder and the
//! model; MODEL / AIM_MODEL_ID then is the checkpoint), AIM_ALLOW_GENERAL_PROFILE_FALLBACK,
//! AIM_CUSTOM_MODEL_NAME, AIM's ids of custom profiles, and the engine flags after `--`
//! merged over AIM_ENGINE_ARGS. `resolve` calls these.

use super::RecipeVerdict;
use super::resolve::{Request, ResolveError, parse_engine_args};
use crate::model::{self, ModelRef};
use indexmap::IndexMap;
use serde_json::Value;

/// MODEL / AIM_MODEL_ID, else AIM_ID: what the engine loads.
pub(super) fn checkpoint_text(select: &Request) -> Result<&str, ResolveError> {
    [&select.model, &select.aim_id]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .find(|m| !m.trim().is_empty())
        .ok_or(ResolveError::NoModel)
}

/// AIM_ID, checked: a Hugging Face id.
pub(super) fn aim_of(select: &Request) -> Result<Option<ModelRef>, ResolveError> {
    let Some(text) = select.aim_id.as_deref().filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    match model::parse_model_id(text) {
        Ok(m @ ModelRef::Hub(_)) => Ok(Some(m)),
        _ => Err(ResolveError::AimId(text.to_string())),
    }
}

/// AIM_CUSTOM_MODEL_NAME, when set and not blank.
pub(super) fn served_name_of(select: &Request) -> Result<Option<String>, ResolveError> {
    match select.served_name.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.starts_with('-') => Err(ResolveError::ServedName(n.to_string())),
        Some(n) => Ok(Some(n.to_string())),
    }
}

/// With AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false, general recipes become manual-only, as AIM
/// does; returns their ids.
pub(super) fn general_off(
    select: &Request,
    recipes: &mut [crate::recipe::LoadedRecipe],
) -> Vec<String> {
    if !select.no_general_fallback {
        return Vec::new();
    }
    recipes
        .iter_mut()
        .filter(|r| r.is_general() && !r.recipe.metadata.manual_selection_only)
        .map(|r| {
            r.recipe.metadata.manual_selection_only = true;
            r.id.clone()
        })
        .collect()
}

/// The words the plan and `recipes` say about general recipes being off.
pub const GENERAL_OFF: &str = "general recipes are off (AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false); only used when asked for by --recipe";

pub(super) fn general_off_note(n: usize) -> String {
    format!("{n} general recipe(s) not eligible: {GENERAL_OFF}")
}

pub(super) fn mark_general_off(rows: &mut [RecipeVerdict], ids: &[String]) {
    for r in rows
        .iter_mut()
        .filter(|r| r.verdict == crate::recipe::select::Verdict::ManualOnly && ids.contains(&r.id))
    {
        r.detail = GENERAL_OFF.to_string();
    }
}

/// AIM's ids of custom profiles as ours: `custom/general/<name>` is `general/<name>` and
/// `custom/<org>/<model>/<name>` is `<name>` (a custom file has the id of the file it
/// stands beside). Any other id is itself.
pub(super) fn aim_profile_id(id: &str) -> String {
    let id = id.trim();
    match id.strip_prefix("custom/") {
        Some(rest) if rest.starts_with("general/") => rest.to_string(),
        Some(rest) => match rest.split('/').collect::<Vec<_>>().as_slice() {
            [_, _, name] => (*name).to_string(),
            _ => id.to_string(),
        },
        None => id.to_string(),
    }
}

/// The user's engine args: `--engine-args` / AIM_ENGINE_ARGS, then the flags after `--`
/// over them; with a note per flag given both ways (the flag after `--` wins).
pub fn user_engine_args(
    select: &Request,
) -> Result<(IndexMap<String, Value>, Vec<String>), ResolveError> {
    let mut args = parse_engine_args(select.engine_args.as_deref())?;
    let flags = crate::engine::parse_trailing_flags(&select.engine_flags)
        .map_err(|e| ResolveError::EngineFlags(e.to_string()))?;
    let norm = |k: &str| k.trim_start_matches('-').replace('_', "-");
    let mut notes = Vec::new();
    for (k, v) in flags {
        if let Some(old) = args.keys().find(|o| norm(o) == norm(&k)).cloned() {
            notes.push(format!(
                "engine flag `--{k}` after `--` wins over `{old}: {}` in --engine-args / AIM_ENGINE_ARGS",
                args[&old]
            ));
            args.shift_remove(&old);
        }
        args.insert(k, v);
    }
    Ok((args, notes))
}
