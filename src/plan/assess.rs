//! Every recipe's verdict for a host and a request, and the one selection step that
//! `plan`, its "what would fit" hint and `recipes` share.

use super::fit::general_check;
use super::gpus::{min_vram, usable_gpus};
use super::{RecipeVerdict, Want};
use crate::gpu::{Gpu, Topology};
use crate::model::config::{self, ModelFacts};
use crate::recipe::LoadedRecipe;
use crate::recipe::select::{self, Assessed, Hardware, Request, Selection, Verdict};
use crate::types::Precision;
use indexmap::IndexMap;

pub(super) fn verdict_rows(recipes: &[LoadedRecipe], assessed: &[Assessed]) -> Vec<RecipeVerdict> {
    assessed
        .iter()
        .map(|a| {
            let r = &recipes[a.index];
            let m = &r.recipe.metadata;
            RecipeVerdict {
                id: r.id.clone(),
                path: r.path.clone(),
                model: r.recipe.for_model().map(str::to_string),
                engine: m.engine,
                gpu: m.gpu.clone(),
                gpu_count: m.gpu_count,
                nodes: m.nodes,
                precision: m.precision,
                metric: m.metric,
                kind: m.kind,
                manual_selection_only: m.manual_selection_only,
                priority: r.origin.priority,
                verdict: a.verdict,
                detail: a.detail.clone(),
            }
        })
        .collect()
}

/// Verdicts of every recipe for this host and request, without choosing (`recipes`).
pub fn assess_all(
    topology: &Topology,
    model: Option<&str>,
    facts: Option<&ModelFacts>,
    recipes: &[LoadedRecipe],
    want: &Want,
) -> Vec<RecipeVerdict> {
    let usable = usable_gpus(topology);
    let vram = min_vram(&usable);
    let preferred = match facts {
        Some(f) => {
            let (c, p, _) = config::preferred(f, usable.len() as u32, vram);
            (c, Some(p))
        }
        None => (1, None),
    };
    let on = Selecting {
        recipes,
        model,
        facts,
        usable: &usable,
        vram,
    };
    let s = on.select(want, preferred);
    verdict_rows(recipes, &s.assessed)
}

/// What a selection runs on: the catalogue, the model and the GPUs one engine may span.
pub(super) struct Selecting<'a> {
    pub recipes: &'a [LoadedRecipe],
    pub model: Option<&'a str>,
    /// None when the model is not known (`recipes` without MODEL): no fit checks.
    pub facts: Option<&'a ModelFacts>,
    pub usable: &'a [&'a Gpu],
    pub vram: Option<u64>,
}

impl Selecting<'_> {
    /// Selects for `want`, preferring `preferred` (GPU count, precision) where the user left
    /// them open; model-agnostic recipes are checked against the model's size.
    pub fn select(&self, want: &Want, preferred: (u32, Option<Precision>)) -> Selection {
        let (pc, pp) = preferred;
        let mut req = request(self.model, want, pc, pp);
        req.beyond_one_node = self
            .facts
            .is_some_and(|f| config::beyond_one_node(f, self.usable.len() as u32, self.vram));
        let hardware = hardware_of(self.usable, want);
        let check = |r: &LoadedRecipe| {
            self.facts
                .and_then(|f| general_check(f, &r.recipe, self.vram))
        };
        select::select(self.recipes, &req, &hardware, Some(&check))
    }
}

pub(super) fn request(model: Option<&str>, want: &Want, pc: u32, pp: Option<Precision>) -> Request {
    Request {
        model: model.map(str::to_string),
        gpu_count: want.gpu_count,
        precision: want.precision,
        engine: want.engine,
        metric: want.metric,
        recipe: want.recipe.clone(),
        preferred_gpu_count: pc,
        preferred_precision: pp,
        nodes: want.group.as_ref().map(|g| g.nnodes),
        beyond_one_node: false,
    }
}

fn hardware_of(usable: &[&Gpu], want: &Want) -> Hardware {
    Hardware {
        usable_gpus: usable.len() as u32,
        product: want
            .gpu_model
            .clone()
            .filter(|p| !p.trim().is_empty())
            .or_else(|| usable.first().map(|g| g.product.clone())),
        gfx: usable.first().map(|g| g.gfx.clone()),
    }
}

pub(super) fn count_verdicts(rows: &[RecipeVerdict]) -> String {
    let mut counts: IndexMap<&str, usize> = IndexMap::new();
    for r in rows.iter().filter(|r| r.verdict != Verdict::Compatible) {
        *counts.entry(r.verdict.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
