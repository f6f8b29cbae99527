//! Reading recipe files: the only file access of the recipe module.
//!
//! Search path, in priority order: every `--recipes-dir` (AIM_RECIPES_DIR) as given, then the
//! built-in folder. In each folder a launch reads first `custom/<org>/<model>/*.yaml` and
//! `custom/general/*.yaml` (AIM searches `<base>/custom` before the rest of a base), then
//! `<org>/<model>/*.yaml` (the model's own recipes) and `general/*.yaml`; an extra folder's
//! top-level `*.yaml` files are read too, so a user can drop a single file there. Nothing else
//! is listed, so start-up cost does not grow with the size of the catalogue.
//!
//! A custom recipe has the id of the file it stands beside (`vllm-mi300x-bf16-tp4-latency`,
//! `general/<stem>`), so `custom/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml` overrides the
//! base's own file of that name (shadowing it), and ranks before the base's other recipes:
//! each base takes two priorities, custom (2i) then the rest (2i+1).
//!
//! The built-in folder is the first of: `--builtin-recipes` / AIM_BUILTIN_RECIPES,
//! `<exe dir>/../share/aim-engine/recipes`, `/opt/aim-engine/recipes`, the source tree's
//! `recipes/` (for `cargo run` and the tests).

use super::{LoadedRecipe, Origin, RecipeError, parse};
use std::fs;
use std::path::{Path, PathBuf};

/// Where recipes are looked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    /// `--recipes-dir` folders, highest priority first.
    pub extra: Vec<PathBuf>,
    /// The built-in catalogue, if one was found.
    pub builtin: Option<PathBuf>,
}

/// The folder under each base that is searched before the rest of it.
pub const CUSTOM: &str = "custom";

impl SearchPath {
    /// (priority of the base's own recipes, folder, is-built-in) in search order; the base's
    /// `custom/` has the priority just before it.
    fn roots(&self) -> Vec<(usize, &Path, bool)> {
        let mut v: Vec<(usize, &Path, bool)> = self
            .extra
            .iter()
            .enumerate()
            .map(|(i, p)| (2 * i + 1, p.as_path(), false))
            .collect();
        if let Some(b) = &self.builtin {
            v.push((2 * self.extra.len() + 1, b.as_path(), true));
        }
        v
    }
}

/// The built-in recipe folder (see the module docs for the order).
pub fn builtin_dir(explicit: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        candidates.push(dir.join("../share/aim-engine/recipes"));
    }
    candidates.push(PathBuf::from("/opt/aim-engine/recipes"));
    candidates.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/recipes"
    )));
    candidates.into_iter().find(|p| p.is_dir())
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> RecipeError {
    RecipeError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("{what}: {e}"),
    }
}

/// `*.yaml` / `*.yml` files directly in `dir`, sorted by name; an absent folder is empty.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, RecipeError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, "cannot list recipe folder", &e)),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_one(path: &Path, id: String, origin: Origin) -> Result<LoadedRecipe, RecipeError> {
    let text = fs::read_to_string(path).map_err(|e| io_error(path, "cannot read recipe", &e))?;
    let recipe = parse(&text, path)?;
    Ok(LoadedRecipe {
        id,
        path: path.to_path_buf(),
        origin,
        recipe,
    })
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The model's folder under `root`: `<root>/<org>/<name>`, matched without regard to case
/// when the exact spelling is absent (Hugging Face ids are case-insensitive).
fn model_dir(root: &Path, hub_id: &str) -> Option<PathBuf> {
    let (org, name) = hub_id.split_once('/')?;
    let exact = root.join(org).join(name);
    if exact.is_dir() {
        return Some(exact);
    }
    let find = |dir: &Path, want: &str| -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(want))
            .map(|e| e.path())
    };
    let org_dir = find(root, org)?;
    find(&org_dir, name).filter(|p| p.is_dir())
}

fn load_general(
    root: &Path,
    origin: &Origin,
    out: &mut Vec<LoadedRecipe>,
) -> Result<(), RecipeError> {
    for f in yaml_files(&root.join("general"))? {
        let id = format!("general/{}", stem(&f));
        out.push(read_one(&f, id, origin.clone())?);
    }
    Ok(())
}

fn load_top_level(
    root: &Path,
    origin: &Origin,
    out: &mut Vec<LoadedRecipe>,
) -> Result<(), RecipeError> {
    for f in yaml_files(root)? {
        let mut r = read_one(&f, stem(&f), origin.clone())?;
        if r.recipe.for_model().is_none() {
            r.id = format!("general/{}", r.id);
        }
        out.push(r);
    }
    Ok(())
}

fn check_extra(root: &Path) -> Result<(), RecipeError> {
    if root.is_dir() {
        Ok(())
    } else {
        Err(RecipeError {
            path: root.to_path_buf(),
            line: None,
            column: None,
            message: "the recipes folder given by --recipes-dir / AIM_RECIPES_DIR does not exist or is not a folder".into(),
        })
    }
}

/// The recipes a launch of `hub_id` may use (None: a local model folder, general ones only),
/// in search order: per root, the model's own, then general, then (extra roots) top-level.
pub fn load_for_model(
    sp: &SearchPath,
    hub_id: Option<&str>,
) -> Result<Vec<LoadedRecipe>, RecipeError> {
    let mut out = Vec::new();
    for (priority, root, builtin) in sp.roots() {
        if !builtin {
            check_extra(root)?;
        }
        let custom = Origin {
            priority: priority - 1,
            builtin,
        };
        load_model_and_general(&root.join(CUSTOM), hub_id, &custom, &mut out)?;
        let origin = Origin { priority, builtin };
        load_model_and_general(root, hub_id, &origin, &mut out)?;
        if !builtin {
            load_top_level(root, &origin, &mut out)?;
        }
    }
    Ok(out)
}

/// `<root>/<org>/<model>/*.yaml` (when `hub_id` is given) then `<root>/general/*.yaml`.
fn load_model_and_general(
    root: &Path,
    hub_id: Option<&str>,
    origin: &Origin,
    out: &mut Vec<LoadedRecipe>,
) -> Result<(), RecipeError> {
    if let Some(dir) = hub_id.and_then(|id| model_dir(root, id)) {
        for f in yaml_files(&dir)? {
            out.push(read_one(&f, stem(&f), origin.clone())?);
        }
    }
    load_general(root, origin, out)
}

/// Every recipe on the search path (for `recipes` without a model; walks the whole catalogue).
pub fn load_all(sp: &SearchPath) -> Result<Vec<LoadedRecipe>, RecipeError> {
    let mut out = Vec::new();
    for (priority, root, builtin) in sp.roots() {
        if !builtin {
            check_extra(root)?;
        }
        let custom = Origin {
            priority: priority - 1,
            builtin,
        };
        load_every_model(&root.join(CUSTOM), &custom, &mut out)?;
        load_general(&root.join(CUSTOM), &custom, &mut out)?;
        let origin = Origin { priority, builtin };
        load_every_model(root, &origin, &mut out)?;
        load_general(root, &origin, &mut out)?;
        if !builtin {
            load_top_level(root, &origin, &mut out)?;
        }
    }
    Ok(out)
}

/// Every `<root>/<org>/<model>/*.yaml` (not `general/` or `custom/`).
fn load_every_model(
    root: &Path,
    origin: &Origin,
    out: &mut Vec<LoadedRecipe>,
) -> Result<(), RecipeError> {
    let mut orgs: Vec<PathBuf> = match fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(root, "cannot list recipe folder", &e)),
    };
    orgs.sort();
    for org in orgs {
        if org
            .file_name()
            .is_some_and(|n| n == "general" || n == CUSTOM)
        {
            continue;
        }
        let mut models: Vec<PathBuf> = fs::read_dir(&org)
            .map_err(|e| io_error(&org, "cannot list recipe folder", &e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        models.sort();
        for m in models {
            for f in yaml_files(&m)? {
                out.push(read_one(&f, stem(&f), origin.clone())?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn recipe(model: Option<&str>, n: u32) -> String {
        let head = model
            .map(|m| format!("aim_id: {m}\nmodel_id: {m}\n"))
            .unwrap_or_default();
        format!(
            "{head}metadata: {{engine: vllm, gpu: MI300X, gpu_count: {n}, precision: bf16, metric: latency, type: {}}}\n",
            if model.is_some() {
                "optimized"
            } else {
                "general"
            }
        )
    }

    #[test]
    fn reads_only_model_folder_general_and_extras() {
        let builtin = tempfile::tempdir().unwrap();
        let extra = tempfile::tempdir().unwrap();
        let b = builtin.path();
        write(
            b,
            "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml",
            &recipe(Some("Qwen/Qwen3-32B"), 4),
        );
        write(
            b,
            "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp1-latency.yaml",
            &recipe(Some("Qwen/Qwen3-32B"), 1),
        );
        write(b, "Qwen/Qwen3-32B/README.md", "not a recipe");
        write(
            b,
            "Qwen/Qwen3-8B/vllm-mi300x-bf16-tp1-latency.yaml",
            &recipe(Some("Qwen/Qwen3-8B"), 1),
        );
        // A broken file of another model must not matter for this launch.
        write(b, "other/Broken/x.yaml", "metadata: [");
        write(
            b,
            "general/vllm-mi300x-bf16-tp8-latency.yaml",
            &recipe(None, 8),
        );
        write(
            extra.path(),
            "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml",
            &recipe(Some("Qwen/Qwen3-32B"), 4),
        );
        write(extra.path(), "mine.yaml", &recipe(None, 2));
        let sp = SearchPath {
            extra: vec![extra.path().to_path_buf()],
            builtin: Some(b.to_path_buf()),
        };
        let got = load_for_model(&sp, Some("qwen/qwen3-32b")).unwrap();
        let ids: Vec<(&str, usize)> = got
            .iter()
            .map(|r| (r.id.as_str(), r.origin.priority))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("vllm-mi300x-bf16-tp4-latency", 1),
                ("general/mine", 1),
                ("vllm-mi300x-bf16-tp1-latency", 3),
                ("vllm-mi300x-bf16-tp4-latency", 3),
                ("general/vllm-mi300x-bf16-tp8-latency", 3),
            ]
        );
        // Local model: general ones only.
        let local = load_for_model(&sp, None).unwrap();
        assert_eq!(local.len(), 2);
        // load_all walks everything, so it does see the broken file.
        let err = load_all(&sp).unwrap_err();
        assert!(err.path.ends_with("other/Broken/x.yaml"), "{err}");
        assert_eq!(err.line, Some(1));
    }

    /// AIM's order within a base: `custom/` (its model folder and its general/) before the
    /// base's own recipes, in the built-in folder and in every --recipes-dir alike; a custom
    /// file has the id of the file it stands beside, so it comes first and shadows that one.
    #[test]
    fn custom_is_searched_first_under_each_base() {
        let builtin = tempfile::tempdir().unwrap();
        let extra = tempfile::tempdir().unwrap();
        let (b, x) = (builtin.path(), extra.path());
        let q = Some("Qwen/Qwen3-32B");
        write(
            b,
            "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml",
            &recipe(q, 4),
        );
        write(
            b,
            "custom/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml",
            &recipe(q, 4),
        );
        write(
            b,
            "custom/general/vllm-mi300x-bf16-tp2-latency.yaml",
            &recipe(None, 2),
        );
        write(
            b,
            "custom/Qwen/Qwen3-8B/vllm-mi300x-bf16-tp1-latency.yaml",
            &recipe(Some("Qwen/Qwen3-8B"), 1),
        );
        write(
            x,
            "custom/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp1-latency.yaml",
            &recipe(q, 1),
        );
        write(
            x,
            "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp8-latency.yaml",
            &recipe(q, 8),
        );
        let sp = SearchPath {
            extra: vec![x.to_path_buf()],
            builtin: Some(b.to_path_buf()),
        };
        let got = load_for_model(&sp, Some("Qwen/Qwen3-32B")).unwrap();
        let ids: Vec<(&str, usize, bool)> = got
            .iter()
            .map(|r| {
                let custom = r.path.components().any(|c| c.as_os_str() == CUSTOM);
                (r.id.as_str(), r.origin.priority, custom)
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("vllm-mi300x-bf16-tp1-latency", 0, true),
                ("vllm-mi300x-bf16-tp8-latency", 1, false),
                ("vllm-mi300x-bf16-tp4-latency", 2, true),
                ("general/vllm-mi300x-bf16-tp2-latency", 2, true),
                ("vllm-mi300x-bf16-tp4-latency", 3, false),
            ]
        );
        // The whole catalogue: custom first per base, and custom/ is no organisation.
        let all = load_all(&sp).unwrap();
        assert_eq!(all.len(), 6, "{all:?}");
        assert!(all.iter().all(|r| r.recipe.for_model() != Some("general")));
        assert_eq!(all[0].origin.priority, 0);
        assert!(all[0].path.starts_with(x.join("custom")));
    }

    #[test]
    fn missing_extra_dir_is_an_error() {
        let sp = SearchPath {
            extra: vec![PathBuf::from("/nonexistent/aim-recipes")],
            builtin: None,
        };
        let err = load_for_model(&sp, Some("a/b")).unwrap_err();
        assert!(err.message.contains("does not exist"), "{err}");
    }

    #[test]
    fn builtin_resolution_order() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            builtin_dir(Some(d.path()), None),
            Some(d.path().to_path_buf())
        );
        // <exe dir>/../share/aim-engine/recipes
        let share = d.path().join("share/aim-engine/recipes");
        fs::create_dir_all(&share).unwrap();
        fs::create_dir_all(d.path().join("bin")).unwrap();
        let got = builtin_dir(None, Some(&d.path().join("bin/aim-engine"))).unwrap();
        assert_eq!(got.canonicalize().unwrap(), share.canonicalize().unwrap());
        // Without either, the source tree's recipes/ (unless /opt/aim-engine/recipes exists).
        let fallback = builtin_dir(None, None).unwrap();
        assert!(fallback.ends_with("recipes"));
    }

    /// The built-in catalogue: every file loads, is named after its metadata, sits in its
    /// model's folder, and uses only flags its engine knows.
    #[test]
    fn builtin_catalogue_is_valid() {
        use crate::recipe::canonical_stem;
        use std::collections::HashSet;
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/recipes"));
        let sp = SearchPath {
            extra: vec![],
            builtin: Some(root.clone()),
        };
        let all = load_all(&sp).unwrap_or_else(|e| panic!("{e}"));
        assert!(all.len() >= 40, "catalogue has {} recipes", all.len());
        let mut ids = HashSet::new();
        for r in &all {
            // Ids repeat across models (the file stem), never within one folder.
            assert!(
                ids.insert((r.recipe.for_model().map(str::to_string), r.id.clone())),
                "duplicate id {}",
                r.id
            );
            let m = &r.recipe.metadata;
            assert_eq!(
                stem(&r.path),
                canonical_stem(m),
                "{}: file name must be <engine>-<gpu>-<precision>-tp<N>-<metric>",
                r.path.display()
            );
            let rel = r.path.strip_prefix(&root).unwrap();
            let folder = rel.parent().unwrap().to_string_lossy().into_owned();
            match r.recipe.aim_id.as_deref() {
                Some(aim) => assert_eq!(
                    folder,
                    aim,
                    "{}: aim_id must name its folder",
                    r.path.display()
                ),
                None => assert_eq!(
                    folder,
                    "general",
                    "{}: only general recipes may omit aim_id",
                    r.path.display()
                ),
            }
            // TP is the GPUs per node; over several nodes it may span some of them.
            if let Some(tp) = r.recipe.engine_args.get("tensor-parallel-size") {
                let tp = tp.as_u64().unwrap_or(0);
                let g = u64::from(m.gpu_count);
                assert!(
                    tp == g
                        || (m.nodes > 1 && tp.is_multiple_of(g) && tp <= g * u64::from(m.nodes)),
                    "{}: tensor-parallel-size {tp} with {g} GPUs per node",
                    r.path.display()
                );
            }
            for flag in r.recipe.engine_args.keys() {
                assert!(
                    crate::engine::is_known_flag(m.engine, flag),
                    "{}: `{flag}` is not a {} flag",
                    r.path.display(),
                    m.engine
                );
            }
            // Every VLLM_* / SGLANG_* name is one the newest pinned engine reads.
            let names: Vec<String> = r.recipe.env_vars.keys().cloned().collect();
            let notes = crate::engine::env_notes(m.engine, None, "recipe env", &names);
            assert!(notes.is_empty(), "{}: {notes:?}", r.path.display());
        }
        // The starter set the design promises.
        let models: HashSet<&str> = all
            .iter()
            .filter_map(|r| r.recipe.aim_id.as_deref())
            .collect();
        for want in [
            "Qwen/Qwen3-32B",
            "Qwen/Qwen3-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama/Llama-3.1-70B-Instruct",
            "Qwen/Qwen3-235B-A22B",
            "deepseek-ai/DeepSeek-R1",
            "openai/gpt-oss-120b",
            "meta-llama/Llama-3.3-70B-Instruct",
            "meta-llama/Llama-3.2-1B-Instruct",
            "meta-llama/Llama-3.2-3B-Instruct",
            "meta-llama/Llama-3.1-405B-Instruct",
            "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "mistralai/Mixtral-8x22B-Instruct-v0.1",
            "openai/gpt-oss-20b",
            "CohereLabs/command-a-reasoning-08-2025",
            "deepseek-ai/DeepSeek-R1-0528",
        ] {
            assert!(models.contains(want), "no recipe for {want}");
        }
        for gpu in ["MI300X", "MI325X", "MI355X"] {
            for n in [1, 2, 4, 8] {
                let id = format!(
                    "general/vllm-{}-bf16-tp{n}-latency",
                    gpu.to_ascii_lowercase()
                );
                assert!(ids.contains(&(None, id.clone())), "missing {id}");
            }
        }
        assert!(ids.contains(&(
            Some("Qwen/Qwen3-32B".into()),
            "vllm-mi300x-bf16-tp4-latency".into()
        )));
        assert!(
            all.iter()
                .any(|r| r.recipe.metadata.engine == crate::types::Engine::Sglang)
        );
    }
}
