//! The model being served: id validation, its size (from config.json and the safetensors
//! index when the Hugging Face cache has them, else from its name), tensor-parallel validity
//! and memory fit.
//!
//! Everything here is pure except `cache`, which reads files.

pub mod cache;
pub mod config;

pub use config::{HubWeights, ModelConfig, ModelFacts, SizeSource};

use std::path::PathBuf;

/// A validated model reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A Hugging Face id `org/name`.
    Hub(String),
    /// An absolute path to a local model folder.
    Local(PathBuf),
}

impl ModelRef {
    /// The `org/name` id, for a hub model.
    pub fn hub_id(&self) -> Option<&str> {
        match self {
            ModelRef::Hub(id) => Some(id),
            ModelRef::Local(_) => None,
        }
    }
    /// The name the model goes by (id or path), e.g. for size-from-name.
    pub fn name(&self) -> String {
        match self {
            ModelRef::Hub(id) => id.clone(),
            ModelRef::Local(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid model `{given}`: {why}. Use a Hugging Face id like `Qwen/Qwen3-32B` (letters, digits, `.`, `_`, `-`) or an absolute path to a local model folder"
)]
pub struct ModelIdError {
    pub given: String,
    pub why: String,
}

fn safe_part(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("an empty part".into());
    }
    if part.starts_with('.') {
        return Err(format!("`{part}` starts with a dot"));
    }
    if part.starts_with('-') {
        // The id becomes an argument of the engine's command line, where it would be a flag.
        return Err(format!(
            "`{part}` starts with `-` (the engine would read it as a flag)"
        ));
    }
    if part.contains("..") {
        return Err(format!("`{part}` contains `..`"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("the character {c:?} is not allowed"));
    }
    if part.len() > 96 {
        return Err(format!("`{part}` is longer than 96 characters"));
    }
    Ok(())
}

/// Validates the syntax of a model id. Pure: whether a local folder exists is checked by the
/// caller (`commands`). An `hf://` prefix (AIM's spelling) is accepted and dropped.
pub fn parse_model_id(given: &str) -> Result<ModelRef, ModelIdError> {
    let err = |why: String| ModelIdError {
        given: given.to_string(),
        why,
    };
    let s = given.trim();
    if s.is_empty() {
        return Err(err("it is empty".into()));
    }
    if s.starts_with('/') {
        let path = PathBuf::from(s);
        let bad = path.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )
        });
        if bad || s.chars().any(char::is_control) {
            return Err(err(
                "a local path must be absolute and normalised (no `.` or `..` parts)".into(),
            ));
        }
        if path.components().count() < 2 {
            return Err(err("a local path must name a model folder, not `/`".into()));
        }
        return Ok(ModelRef::Local(path));
    }
    let s = s.strip_prefix("hf://").unwrap_or(s);
    if s.contains("..") {
        return Err(err("it contains `..`".into()));
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != 2 {
        return Err(err(format!(
            "it has {} part(s); expected exactly `org/name`",
            parts.len()
        )));
    }
    for p in &parts {
        safe_part(p).map_err(err)?;
    }
    Ok(ModelRef::Hub(s.to_string()))
}

/// The names clients use for a model: the first is what the engine answers with (and what
/// readiness asks for); the rest are aliases it also accepts.
///
/// - A Hugging Face id (or any model string that is not an absolute path): itself.
/// - A local folder: its own name (`/models/Qwen3-32B` -> `Qwen3-32B`), or `org/name` when it
///   is a snapshot of a Hugging Face cache (`.../models--org--name/snapshots/<commit>`), so a
///   client sends the same `"model"` whether the weights were mounted or downloaded. The
///   absolute path follows as an alias: it is what `vllm serve /path` answers to by default.
pub fn served_names(model: &str) -> (String, Vec<String>) {
    let path = std::path::Path::new(model);
    if !path.is_absolute() {
        return (model.to_string(), Vec::new());
    }
    let trimmed = model.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    let from_cache = match parts.as_slice() {
        [.., repo, "snapshots", _commit] => repo
            .strip_prefix("models--")
            .and_then(|r| r.split_once("--"))
            .filter(|(org, name)| !org.is_empty() && !name.is_empty())
            .map(|(org, name)| format!("{org}/{name}")),
        _ => None,
    };
    let own = from_cache.or_else(|| {
        parts
            .last()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string())
    });
    match own {
        Some(name) if name != trimmed => (name, vec![trimmed.to_string()]),
        _ => (trimmed.to_string(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn served_names_of_ids_folders_and_cache_snapshots() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("Qwen/Qwen3-32B", "Qwen/Qwen3-32B", &[]),
            ("/models/Qwen3-32B", "Qwen3-32B", &["/models/Qwen3-32B"]),
            ("/models/Qwen3-32B/", "Qwen3-32B", &["/models/Qwen3-32B"]),
            (
                "/hf/hub/models--Qwen--Qwen3-32B/snapshots/abc123",
                "Qwen/Qwen3-32B",
                &["/hf/hub/models--Qwen--Qwen3-32B/snapshots/abc123"],
            ),
            (
                "/x/models--bad/snapshots/abc",
                "abc",
                &["/x/models--bad/snapshots/abc"],
            ),
            ("/", "", &[]),
        ];
        for (model, first, rest) in cases {
            let (got, aliases) = served_names(model);
            let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
            assert_eq!(
                (got.as_str(), aliases.as_slice()),
                (*first, *rest),
                "{model}"
            );
        }
    }

    use super::*;

    #[test]
    fn model_ids() {
        let ok = [
            ("Qwen/Qwen3-32B", ModelRef::Hub("Qwen/Qwen3-32B".into())),
            (
                "meta-llama/Llama-3.1-8B-Instruct",
                ModelRef::Hub("meta-llama/Llama-3.1-8B-Instruct".into()),
            ),
            (
                "hf://openai/gpt-oss-120b",
                ModelRef::Hub("openai/gpt-oss-120b".into()),
            ),
            (
                "deepseek-ai/DeepSeek_R1",
                ModelRef::Hub("deepseek-ai/DeepSeek_R1".into()),
            ),
            ("/models/qwen3", ModelRef::Local("/models/qwen3".into())),
        ];
        for (s, want) in ok {
            assert_eq!(parse_model_id(s).unwrap(), want, "{s}");
        }
        let bad = [
            ("", "empty"),
            ("Qwen", "1 part"),
            ("a/b/c", "3 part"),
            ("../etc/passwd", "`..`"),
            ("a/..", "`..`"),
            ("a/.hidden", "starts with a dot"),
            ("--api-key/x", "starts with `-`"),
            ("org/-x", "starts with `-`"),
            ("/", "model folder"),
            ("org/", "empty"),
            ("/models/../etc", "normalised"),
            ("a/b;rm -rf", "not allowed"),
            ("a/$(id)", "not allowed"),
            ("a/b c", "not allowed"),
            ("relative/dir/x", "3 part"),
            ("a/b`", "not allowed"),
        ];
        for (s, why) in bad {
            let e = parse_model_id(s).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(why), "{s:?}: {shown}");
            assert!(shown.contains("org/name") || shown.contains("Qwen/Qwen3-32B"));
        }
    }
}
