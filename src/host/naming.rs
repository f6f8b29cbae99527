//! Container names: `aim-engine-<model slug>-<N>gpu-<precision>-<engine>`, as the original
//! AIM Engine named them (`aim-engine-qwen-qwen3-32b-4gpu-bf16-vllm`), made safe for Docker
//! (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) and unique among the names Docker already knows. Pure.

use crate::types::{Engine, Precision};

/// Every generated name starts with this; `list` does not rely on it (labels do).
pub const PREFIX: &str = "aim-engine";

/// Longest model slug kept in a name, so names stay readable in `docker ps`.
const MAX_SLUG: usize = 80;

/// The model part of a container name: lower case, `/` and anything Docker does not allow
/// turned into `-`, runs of `-` collapsed. A local path (`/models/Llama-3.1-8B/`) is named
/// after its last folder, since the rest of the path says nothing about the model. Never
/// empty.
pub fn model_slug(model: &str) -> String {
    let trimmed = model.trim();
    let source =
        if trimmed.starts_with('/') || trimmed.starts_with("./") || trimmed.starts_with("../") {
            trimmed
                .trim_end_matches('/')
                .rsplit('/')
                .find(|part| !part.is_empty() && *part != "." && *part != "..")
                .unwrap_or("")
        } else {
            trimmed
        };
    let mut slug = String::with_capacity(source.len());
    for c in source.chars() {
        let c = c.to_ascii_lowercase();
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_';
        let next = if keep { c } else { '-' };
        if next == '-' && slug.ends_with('-') {
            continue;
        }
        slug.push(next);
    }
    // Docker wants the name to start with an alphanumeric; trailing separators look broken.
    let slug = slug.trim_matches(|c: char| c == '-' || c == '.' || c == '_');
    let mut slug: String = slug.chars().take(MAX_SLUG).collect();
    while slug.ends_with(['-', '.', '_']) {
        slug.pop();
    }
    if slug.is_empty() {
        "model".to_string()
    } else {
        slug
    }
}

/// `aim-engine-<slug>-<N>gpu-<precision>-<engine>`.
pub fn container_name(model: &str, gpu_count: u32, precision: Precision, engine: Engine) -> String {
    format!(
        "{PREFIX}-{}-{gpu_count}gpu-{}-{}",
        model_slug(model),
        precision.as_str(),
        engine.as_str()
    )
}

/// `base` if no container has that name yet, else `base-2`, `base-3`, ... (the first free).
/// Docker names are global, so `taken` holds every container's name, not only ours.
pub fn unique_name(base: &str, taken: &[String]) -> String {
    let is_taken = |n: &str| taken.iter().any(|t| t.trim_start_matches('/') == n);
    if !is_taken(base) {
        return base.to_string();
    }
    (2u32..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !is_taken(n))
        .unwrap_or_else(|| base.to_string())
}

/// Whether Docker accepts `name` as a container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_original_scheme() {
        let cases: &[(&str, u32, Precision, Engine, &str)] = &[
            (
                "Qwen/Qwen3-32B",
                4,
                Precision::Bf16,
                Engine::Vllm,
                "aim-engine-qwen-qwen3-32b-4gpu-bf16-vllm",
            ),
            (
                "meta-llama/Llama-3.1-8B-Instruct",
                1,
                Precision::Fp16,
                Engine::Sglang,
                "aim-engine-meta-llama-llama-3.1-8b-instruct-1gpu-fp16-sglang",
            ),
            (
                "amd/Llama-3.1-405B-Instruct-FP8-KV",
                8,
                Precision::Fp8,
                Engine::Vllm,
                "aim-engine-amd-llama-3.1-405b-instruct-fp8-kv-8gpu-fp8-vllm",
            ),
        ];
        for (model, n, p, e, want) in cases {
            let got = container_name(model, *n, *p, *e);
            assert_eq!(got, *want, "model {model}");
            assert!(is_valid_name(&got), "{got} must be a valid Docker name");
        }
    }

    #[test]
    fn slugs_of_odd_ids_and_local_paths() {
        let cases: &[(&str, &str)] = &[
            ("Qwen/Qwen3-32B", "qwen-qwen3-32b"),
            ("deepseek-ai/DeepSeek-R1", "deepseek-ai-deepseek-r1"),
            ("org/Model_Name.v2", "org-model_name.v2"),
            ("org//double--dash", "org-double-dash"),
            ("  Org/Spaced Name  ", "org-spaced-name"),
            ("org/ünïcode-model", "org-n-code-model"),
            ("org/name:tag@sha", "org-name-tag-sha"),
            ("/models/Llama-3.1-8B/", "llama-3.1-8b"),
            ("/data/hf/Qwen3-8B", "qwen3-8b"),
            ("./local/Mistral-7B", "mistral-7b"),
            ("../weights/", "weights"),
            ("/", "model"),
            ("", "model"),
            ("---", "model"),
            ("-Org/.hidden", "org-.hidden"),
        ];
        for (model, want) in cases {
            assert_eq!(model_slug(model), *want, "model {model:?}");
        }
    }

    #[test]
    fn very_long_ids_are_cut_without_a_trailing_separator() {
        let long = format!("org/{}", "a-".repeat(100));
        let slug = model_slug(&long);
        assert!(slug.len() <= MAX_SLUG, "{slug}");
        assert!(!slug.ends_with('-'));
        assert!(is_valid_name(&container_name(
            &long,
            2,
            Precision::Bf16,
            Engine::Vllm
        )));
    }

    #[test]
    fn a_taken_name_gets_the_first_free_suffix() {
        let taken = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &str)] = &[
            (&[], "n"),
            (&["other"], "n"),
            (&["n"], "n-2"),
            (&["/n"], "n-2"),
            (&["n", "n-2"], "n-3"),
            (&["n", "n-3"], "n-2"),
        ];
        for (t, want) in cases {
            assert_eq!(unique_name("n", &taken(t)), *want, "taken {t:?}");
        }
    }

    #[test]
    fn docker_name_rules() {
        for ok in ["ab", "a1", "aim-engine-x_y.z"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-ab", ".ab", "a b", "a/b", "ä-b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
