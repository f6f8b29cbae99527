//! The names a launch is served under (pure), as AMD's AIM runs vLLM: `--served-model-name
//! <model id> <aim id>` when the checkpoint differs from the model asked for (a recipe that
//! swaps in a pre-quantized checkpoint, or MODEL / AIM_MODEL_ID under AIM_ID), so clients may
//! use either. AIM_CUSTOM_MODEL_NAME comes first when set. vLLM takes several names; SGLang
//! takes one: the custom name, else the name asked for. The name our own readiness checks
//! use (`Launch::served_model_name`) is that one too, so it is served by both engines.

use super::Planned;
use crate::types::Engine;

/// (the name every engine serves, every name vLLM serves in order).
pub fn names(asked: &str, checkpoint: &str, custom: Option<&str>) -> (String, Vec<String>) {
    let (asked_name, asked_aliases) = crate::model::served_names(asked);
    let mut all: Vec<String> = custom.map(str::to_string).into_iter().collect();
    if checkpoint != asked {
        let (c, aliases) = crate::model::served_names(checkpoint);
        all.push(c);
        all.extend(aliases);
    }
    all.push(asked_name.clone());
    all.extend(asked_aliases);
    let mut seen = std::collections::HashSet::new();
    all.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    (custom.map_or(asked_name, str::to_string), all)
}

/// Puts `names` after `--served-model-name` in `argv` (vLLM: all of them; SGLang: the one),
/// in place of the names there.
fn rewrite(engine: Engine, argv: &mut Vec<String>, one: &str, all: &[String]) {
    let Some(at) = argv.iter().position(|w| w == "--served-model-name") else {
        return;
    };
    let end = argv[at + 1..]
        .iter()
        .position(|w| w.starts_with("--"))
        .map_or(argv.len(), |p| at + 1 + p);
    let names: Vec<String> = match engine {
        Engine::Vllm => all.to_vec(),
        Engine::Sglang => vec![one.to_string()],
    };
    argv.splice(at + 1..end, names);
}

/// Every launch of the plan served under [`names`].
pub fn serve_under_all_names(p: &mut Planned, custom: Option<&str>) {
    let asked = p.plan.model.clone();
    for (launch, source) in p.plan.launches.iter_mut().zip(&p.sources) {
        let (one, all) = names(&asked, &source.checkpoint, custom);
        rewrite(launch.engine, &mut launch.argv, &one, &all);
        launch.served_model_name = one;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn model_id_and_aim_id_like_aim() {
        let fp8 = "amd/Llama-3.1-8B-Instruct-FP8-KV";
        let asked = "meta-llama/Llama-3.1-8B-Instruct";
        assert_eq!(names(asked, asked, None), (asked.into(), v(&[asked])));
        assert_eq!(names(asked, fp8, None), (asked.into(), v(&[fp8, asked])));
        assert_eq!(
            names(asked, fp8, Some("my-llama")),
            ("my-llama".into(), v(&["my-llama", fp8, asked]))
        );
        assert_eq!(
            names("/models/Qwen3-32B", "/models/Qwen3-32B", None),
            ("Qwen3-32B".into(), v(&["Qwen3-32B", "/models/Qwen3-32B"]))
        );
        let mut argv = v(&[
            "vllm",
            "serve",
            fp8,
            "--served-model-name",
            asked,
            "--max-model-len",
            "8",
        ]);
        let (one, all) = names(asked, fp8, None);
        rewrite(Engine::Vllm, &mut argv, &one, &all);
        assert_eq!(
            argv,
            v(&[
                "vllm",
                "serve",
                fp8,
                "--served-model-name",
                fp8,
                asked,
                "--max-model-len",
                "8"
            ])
        );
        let mut argv = v(&["x", "--served-model-name", asked]);
        rewrite(Engine::Sglang, &mut argv, "my-llama", &all);
        assert_eq!(argv, v(&["x", "--served-model-name", "my-llama"]));
    }
}
