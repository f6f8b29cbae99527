//! The decision: the chosen launch, the fallback chain and the reasons, or why nothing fits
//! and what would.

use super::assess::{Selecting, count_verdicts, request, verdict_rows};
use super::generate::{OnGpus, generate};
use super::gpus::{min_vram, pick_free_first, usable_gpus};
use super::{
    LaunchSource, NoFit, NoGpu, Plan, PlanError, PlanInput, Planned, RecipeVerdict, Suggestion,
    Want,
};
use crate::engine::{self, CommandInput};
use crate::launch::{Launch, SelectedGpu};
use crate::model::config;
use crate::recipe::LoadedRecipe;
use crate::recipe::select::{self, Selection, Verdict};
use crate::types::{Engine, Precision, RecipeType};

/// Decides: the chosen launch, the fallback chain, the reasons.
pub fn decide(input: &PlanInput<'_>) -> Result<Planned, PlanError> {
    let on = on_gpus(input)?;
    let n_usable = on.count();
    let want = input.want;
    let (pref_count, pref_precision, pref_why) = config::preferred(input.facts, n_usable, on.vram);

    let mut reasons = vec![format!(
        "{n_usable} usable {} GPU(s) ({}{})",
        on.product,
        on.gfx,
        on.vram
            .map(|v| format!(", {:.0} GiB each", v as f64 / (1u64 << 30) as f64))
            .unwrap_or_default()
    )];
    let others = input.topology.gpus.len() - on.usable.len();
    if others > 0 {
        reasons.push(format!(
            "{others} other GPU(s) of a different product are left out: one engine spans GPUs of one kind"
        ));
    }
    if let Some(gm) = &want.gpu_model {
        reasons.push(format!(
            "recipes matched as if the GPUs were {gm} (--gpu-model)"
        ));
    }
    if let Some(n) = want.gpu_count
        && n > n_usable
    {
        return Err(PlanError::NoFit {
            why: Box::new(NoFit::TooFewGpus {
                asked: n,
                usable: n_usable,
                product: on.product.clone(),
            }),
            hint: suggestion(input, &on),
        });
    }
    reasons.push(format!("{}: {}", input.model, input.facts.describe()));
    match want.gpu_count {
        Some(n) if want.precision.is_none() => reasons.push(format!(
            "{n} GPU(s) asked for; preferred precision {pref_precision} (a tie-breaker, rule 5)"
        )),
        Some(n) => reasons.push(format!("{n} GPU(s) asked for")),
        None => match want.precision {
            Some(p) => reasons.push(format!(
                "preferred {pref_count} GPU(s) (a tie-breaker, rule 6); {p} asked for: {pref_why}"
            )),
            None => reasons.push(format!(
                "preferred {pref_count} GPU(s) in {pref_precision} (tie-breakers, rules 5 and 6): {pref_why}"
            )),
        },
    }

    let sel = selecting(input, &on).select(want, (pref_count, Some(pref_precision)));
    let verdicts = verdict_rows(input.recipes, &sel.assessed);
    let preferred = (pref_count, pref_precision);
    let sources = if let Some(id) = &want.recipe {
        vec![asked_recipe(input, &on, &sel, id, &mut reasons)?]
    } else if !sel.ranked.is_empty() {
        ranked(input, &sel, preferred, &mut reasons)
    } else {
        vec![generated(input, &on, preferred, &verdicts, &mut reasons)?]
    };
    let rejected = count_verdicts(&verdicts);
    if !rejected.is_empty() {
        reasons.push(format!(
            "not usable here: {rejected} (see `aim-engine recipes`)"
        ));
    }

    let (launches, sources) = build_launches(input, &on, sources, &mut reasons)?;
    Ok(Planned {
        plan: Plan {
            model: input.model.to_string(),
            launches,
            reasons,
            usable_gpus: n_usable,
            product: Some(on.product),
            gfx: Some(on.gfx),
        },
        sources,
        verdicts,
        preferred_gpu_count: pref_count,
        preferred_precision: pref_precision,
        weight_bytes: input.facts.weight_bytes,
    })
}

/// The launches of the chain, in order. The chosen (first) must build; a fallback whose
/// command cannot be built (user engine args of the other engine, say) could never run: it
/// leaves the chain, with a reason. Returns the launches and the sources kept.
fn build_launches(
    input: &PlanInput<'_>,
    on: &OnGpus<'_>,
    sources: Vec<LaunchSource>,
    reasons: &mut Vec<String>,
) -> Result<(Vec<Launch>, Vec<LaunchSource>), PlanError> {
    let mut launches = Vec::with_capacity(sources.len());
    let mut kept = Vec::with_capacity(sources.len());
    for (i, s) in sources.into_iter().enumerate() {
        let (launch, notes) = match build_launch(input, on, &s) {
            Ok(built) => built,
            // A fallback that cannot be built leaves the chain; the chosen must build.
            Err(PlanError::Command { source, .. }) if i > 0 => {
                reasons.push(format!(
                    "fallback {} left out: its engine command cannot be built: {source}",
                    s.id
                ));
                continue;
            }
            // So does one that spans nodes when this process is in no group.
            Err(PlanError::NeedsGroup { nodes, .. }) if i > 0 => {
                reasons.push(format!(
                    "fallback {} left out: it spans {nodes} nodes and this node is in no group",
                    s.id
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        // The chosen launch's notes (what the plan will change or warn about); the fallbacks'
        // show when they run.
        if i == 0 {
            reasons.extend(notes.into_iter().map(|n| format!("{}: {n}", s.id)));
        }
        launches.push(launch);
        kept.push(s);
    }
    Ok((launches, kept))
}

/// The GPUs one engine may span, or why there are none.
fn on_gpus<'a>(input: &PlanInput<'a>) -> Result<OnGpus<'a>, PlanError> {
    let usable = usable_gpus(input.topology);
    let Some(first) = usable.first() else {
        let why = if input.topology.excluded.is_empty() {
            NoGpu::NoneFound
        } else {
            NoGpu::AllExcluded(
                input
                    .topology
                    .excluded
                    .iter()
                    .map(|e| (e.kfd_node, e.reason.clone()))
                    .collect(),
            )
        };
        return Err(PlanError::NoGpu(why));
    };
    Ok(OnGpus {
        product: first.product.clone(),
        gfx: first.gfx.clone(),
        vram: min_vram(&usable),
        usable,
    })
}

fn selecting<'a>(input: &PlanInput<'a>, on: &'a OnGpus<'a>) -> Selecting<'a> {
    Selecting {
        recipes: input.recipes,
        model: Some(input.model),
        facts: Some(input.facts),
        usable: &on.usable,
        vram: on.vram,
    }
}

/// `--recipe ID`: that recipe alone (no fallbacks), when it can run here.
fn asked_recipe(
    input: &PlanInput<'_>,
    on: &OnGpus<'_>,
    sel: &Selection,
    id: &str,
    reasons: &mut Vec<String>,
) -> Result<LaunchSource, PlanError> {
    let Some(a) = sel
        .assessed
        .iter()
        .find(|a| input.recipes[a.index].id == id)
    else {
        let close = select::close_ids(id, input.recipes.iter().map(|r| r.id.as_str()));
        return Err(PlanError::UnknownRecipe {
            id: id.to_string(),
            model: input.model.to_string(),
            close,
        });
    };
    if a.verdict != Verdict::Compatible {
        return Err(PlanError::NoFit {
            why: Box::new(NoFit::RecipeCannotRun {
                id: id.to_string(),
                verdict: a.verdict,
                detail: a.detail.clone(),
            }),
            hint: suggestion(input, on),
        });
    }
    reasons.push(format!(
        "recipe {id} was asked for by --recipe (no fallbacks)"
    ));
    Ok(source_of(&input.recipes[a.index], input.checkpoint))
}

/// The compatible recipes in rank order: the first is chosen, the rest are the fallbacks.
/// Each reason names the rank rule (`select::Rule`) that decided.
fn ranked(
    input: &PlanInput<'_>,
    sel: &Selection,
    preferred: (u32, Precision),
    reasons: &mut Vec<String>,
) -> Vec<LaunchSource> {
    let req = request(
        Some(input.model),
        input.want,
        preferred.0,
        Some(preferred.1),
    );
    let r = &input.recipes[sel.ranked[0]];
    let m = &r.recipe.metadata;
    let mut why = format!(
        "chose {}: {} {} recipe for {} on {} GPU(s) in {}, tuned for {}",
        r.id,
        type_words(m.kind),
        m.engine,
        m.gpu,
        m.gpu_count,
        m.precision,
        m.metric
    );
    if !r.origin.builtin {
        why.push_str(&format!("; from {} (--recipes-dir)", r.path.display()));
    }
    match sel.ranked.get(1) {
        Some(&j) => {
            let other = &input.recipes[j];
            let rule = select::deciding_rule(r, other, &req);
            why.push_str(&format!("; ranks before {} by {rule}", other.id));
        }
        None => why.push_str("; the only compatible recipe"),
    }
    reasons.push(why);
    if input.want.precision.is_none() && m.precision != preferred.1 {
        reasons.push(differs(
            input,
            sel,
            &req,
            "precision",
            preferred.1.to_string(),
            |o| o.precision == preferred.1,
        ));
    }
    if input.want.gpu_count.is_none() && m.gpu_count != preferred.0 {
        reasons.push(differs(
            input,
            sel,
            &req,
            "GPU count",
            format!("{} GPU(s)", preferred.0),
            |o| o.gpu_count == preferred.0,
        ));
    }
    let sources: Vec<LaunchSource> = sel
        .ranked
        .iter()
        .map(|&i| source_of(&input.recipes[i], input.checkpoint))
        .collect();
    if sources.len() > 1 {
        reasons.push(format!(
            "{} more compatible recipe(s) form the fallback chain, in the same rank order; \
             after an out-of-memory failure the ones with more memory per replica (more GPUs, \
             lower precision) go first",
            sources.len() - 1
        ));
    }
    sources
}

/// Why the chosen recipe's `what` (precision, GPU count) is not the preferred `wanted`: the
/// best compatible recipe that has it and the rule by which it ranks lower, or that none has it.
fn differs(
    input: &PlanInput<'_>,
    sel: &Selection,
    req: &select::Request,
    what: &str,
    wanted: String,
    has: impl Fn(&crate::recipe::Metadata) -> bool,
) -> String {
    let chosen = &input.recipes[sel.ranked[0]];
    let m = &chosen.recipe.metadata;
    let got = if what == "precision" {
        m.precision.to_string()
    } else {
        format!("{} GPU(s)", m.gpu_count)
    };
    let best = sel
        .ranked
        .iter()
        .map(|&i| &input.recipes[i])
        .find(|o| has(&o.recipe.metadata));
    match best {
        Some(o) => format!(
            "{what}: {got}, not the preferred {wanted}: {} has {wanted} but ranks lower by {} \
             (the preference only breaks ties after it)",
            o.id,
            select::deciding_rule(chosen, o, req)
        ),
        None => format!(
            "{what}: {got}, not the preferred {wanted}: no compatible recipe for {} here has {wanted}",
            input.model
        ),
    }
}

/// No recipe fits: generated defaults, or why even those do not fit and what would.
fn generated(
    input: &PlanInput<'_>,
    on: &OnGpus<'_>,
    preferred: (u32, Precision),
    verdicts: &[RecipeVerdict],
    reasons: &mut Vec<String>,
) -> Result<LaunchSource, PlanError> {
    if input.recipes.is_empty() {
        reasons.push(format!(
            "no recipe for {} or general recipe was found",
            input.model
        ));
    } else {
        reasons.push(format!(
            "none of the {} recipe(s) fits ({}): using generated defaults",
            input.recipes.len(),
            count_verdicts(verdicts)
        ));
    }
    let g = generate(input, on, preferred, reasons).map_err(|why| PlanError::NoFit {
        why: Box::new(why),
        hint: suggestion(input, on),
    })?;
    let m = &g.recipe.metadata;
    reasons.push(format!(
        "chose {}: generated {} defaults on {} GPU(s) in {}",
        g.id, m.engine, m.gpu_count, m.precision
    ));
    Ok(g)
}

fn source_of(r: &LoadedRecipe, checkpoint: &str) -> LaunchSource {
    LaunchSource {
        id: r.id.clone(),
        path: Some(r.path.clone()),
        recipe: r.recipe.clone(),
        checkpoint: r
            .recipe
            .model_id
            .clone()
            .unwrap_or_else(|| checkpoint.to_string()),
    }
}

fn build_launch(
    input: &PlanInput<'_>,
    on: &OnGpus<'_>,
    src: &LaunchSource,
) -> Result<(Launch, Vec<String>), PlanError> {
    let m = &src.recipe.metadata;
    let group = input.want.group.as_ref().filter(|_| m.nodes > 1);
    if m.nodes > 1 && group.is_none() {
        return Err(PlanError::NeedsGroup {
            recipe: src.id.clone(),
            nodes: m.nodes,
            total: m.total_gpus(),
        });
    }
    let (gpus, busy) = pick_free_first(&on.usable, input.topology, m.gpu_count as usize);
    let ordinals: Vec<u32> = gpus.iter().map(|g| g.index).collect();
    let launcher = match m.engine {
        Engine::Vllm => input.launchers.vllm.as_deref(),
        Engine::Sglang => input.launchers.sglang.as_deref(),
    };
    let (served, aliases) = crate::model::served_names(input.model);
    let ci = CommandInput {
        engine: m.engine,
        model: &src.checkpoint,
        served_model_name: &served,
        served_aliases: &aliases,
        port: input.engine_port,
        tensor_parallel: m.gpu_count,
        recipe_args: &src.recipe.engine_args,
        user_args: input.user_args,
        recipe_env: &src.recipe.env_vars,
        ordinals: &ordinals,
        launcher,
        engine_version: input.launchers.versions.get(m.engine),
        group,
    };
    let (cmd, mut notes) =
        engine::build_command_with_notes(&ci).map_err(|source| PlanError::Command {
            recipe: src.id.clone(),
            source,
        })?;
    notes.extend(busy);
    let launch = Launch {
        recipe_id: src.id.clone(),
        engine: m.engine,
        precision: m.precision,
        gpu_count: m.gpu_count,
        nodes: m.nodes,
        role: group.map(crate::group::Group::role),
        group: group.cloned(),
        gpus: gpus
            .iter()
            .map(|g| SelectedGpu {
                ordinal: g.index,
                product: g.product.clone(),
                pci: g.pci.clone(),
                render_minor: g.render_minor,
            })
            .collect(),
        served_model_name: served.clone(),
        argv: cmd.argv,
        env: cmd.env,
        engine_port: input.engine_port,
        user_flags: input.user_args.keys().cloned().collect(),
    };
    Ok((launch, notes))
}

fn type_words(t: RecipeType) -> &'static str {
    match t {
        RecipeType::Optimized => "an optimized (benchmark-tuned)",
        RecipeType::Preview => "a preview",
        RecipeType::Unoptimized => "an unoptimized",
        RecipeType::General => "a general (model-agnostic)",
    }
}

/// "what would fit": the plan with the user's count/precision/engine/metric constraints
/// dropped, in words.
fn suggestion(input: &PlanInput<'_>, on: &OnGpus<'_>) -> Suggestion {
    let n_usable = on.count();
    let relaxed = Want {
        gpu_model: input.want.gpu_model.clone(),
        ..Default::default()
    };
    let (pc, pp, _) = config::preferred(input.facts, n_usable, on.vram);
    let s = selecting(input, on).select(&relaxed, (pc, Some(pp)));
    match s.ranked.first() {
        Some(&i) => {
            let r = &input.recipes[i];
            let m = &r.recipe.metadata;
            Suggestion::Recipe {
                id: r.id.clone(),
                model: input.model.to_string(),
                gpu_count: m.gpu_count,
                precision: m.precision,
                engine: m.engine,
                metric: m.metric,
            }
        }
        // Generated defaults only differ from what failed when the user constrained the plan.
        None if input.want.precision.is_some() || input.want.gpu_count.is_some() => {
            Suggestion::Generated {
                model: input.model.to_string(),
                gpu_count: pc.min(n_usable),
                precision: pp,
            }
        }
        None => Suggestion::Nothing,
    }
}
