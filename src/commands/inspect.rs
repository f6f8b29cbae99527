//! `aim-engine plan`, `dry-run`, `recipes`: plan through `plan::resolve` and print the
//! result (text for humans, JSON with the stable names the README lists).

use crate::cli::{Format, GlobalArgs, PlanArgs, SelectArgs};
use crate::engine::EngineVersions;
use crate::exit::{self, ExitError};
use crate::gpu::Topology;
use crate::plan::resolve::{self, ResolveError, VersionSource};
use crate::plan::{self, Planned, RecipeVerdict};
use serde_json::{Value, json};
use std::fmt::Write as _;

fn exit_error(e: ResolveError) -> anyhow::Error {
    ExitError::from(e).into()
}

/// Bad group facts (AIM_NNODES, LWS_*) are a usage error.
pub(crate) fn group_error(e: crate::group::GroupError) -> anyhow::Error {
    ExitError::new(exit::USAGE, e.to_string()).into()
}

/// Detects the GPUs and plans on all of them, for the engine version of `--engine-version`
/// (else the installed engine's, else the newest pinned table), and says which; warns of
/// `VLLM_*` / `SGLANG_*` variables in our own environment (passed through to the engine)
/// that this version does not read.
fn planned(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<Planned> {
    let given = match a.engine_version.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => EngineVersions::parse(text).map_err(|e| {
            ExitError::new(
                exit::USAGE,
                format!("--engine-version / AIM_ENGINE_VERSION: {e}"),
            )
        })?,
        _ => EngineVersions::default(),
    };
    let sources = plan::Sources::from(g);
    let request = a.select.request().map_err(group_error)?;
    let topology = resolve::detect(&sources).map_err(exit_error)?;
    let mut versions = given.or_newest();
    let mut p =
        resolve::plan_for(&topology, &sources, &request, a.port, &versions).map_err(exit_error)?;
    // Only the chosen launch's engine is asked for its version (one probe); the plan is made
    // again when it reports another version than the newest table's.
    let engine = p.plan.launches[0].engine;
    let source = if given.get(engine).is_some() {
        VersionSource::Given
    } else if let Some(v) = resolve::installed_version(engine) {
        if versions.get(engine) != Some(v.as_str()) {
            versions.set(engine, v);
            p = resolve::plan_for(&topology, &sources, &request, a.port, &versions)
                .map_err(exit_error)?;
        }
        VersionSource::Installed
    } else {
        VersionSource::NewestTable
    };
    let source = source.to_string();
    let mut extra = vec![format!(
        "engine version: {}",
        versions.describe(engine, &source)
    )];
    let user_env: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    extra.extend(crate::engine::env_notes(
        engine,
        versions.get(engine),
        "user env",
        &user_env,
    ));
    p.plan.reasons.splice(0..0, extra);
    Ok(p)
}

/// `aim-engine plan`.
pub fn plan(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    let p = planned(g, a)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&p))?),
        Format::Text => print!("{}", plan_text(&p)),
    }
    Ok(exit::OK)
}

/// The `plan --format json` document (stable names; see the README).
pub fn plan_json(p: &Planned) -> Value {
    let l = &p.plan.launches[0];
    let s = &p.sources[0];
    let m = &s.recipe.metadata;
    json!({
        "model": p.plan.model,
        "gpus": {
            "usable": p.plan.usable_gpus,
            "selected": l.gpus.iter().map(|g| g.ordinal).collect::<Vec<_>>(),
            "product": p.plan.product,
            "gfx": p.plan.gfx,
        },
        "recipe": {
            "id": s.id,
            "path": s.path.as_ref().map(|p| p.display().to_string()),
            "engine": m.engine,
            "gpu_count": m.gpu_count,
            "nodes": m.nodes,
            "precision": m.precision,
            "metric": m.metric,
            "type": m.kind,
        },
        "node": node_json(l),
        "reasons": p.plan.reasons,
        "fallbacks": p.sources[1..].iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "command": { "argv": l.argv, "env": l.env },
    })
}

/// This node's part of the launch: the nodes it spans, the GPUs on each, and (in a group) the
/// role, rank and leader; what `plan` says of a one-node launch is `nodes: 1`, `role: null`.
fn node_json(l: &crate::launch::Launch) -> Value {
    json!({
        "nodes": l.nodes,
        "gpus_per_node": l.gpu_count,
        "role": l.role,
        "rank": l.group.as_ref().map(|g| g.rank),
        "leader_addr": l.group.as_ref().map(|g| g.leader_addr.clone()),
        "dist_port": l.group.as_ref().map(|g| g.dist_port),
    })
}

/// The text line of this node's place in a group, if it is in one.
fn node_line(l: &crate::launch::Launch) -> Option<String> {
    let g = l.group.as_ref()?;
    Some(format!(
        "  Node:    {} {} of {} ({} GPU(s) on each), leader {}:{}; this node's command below",
        g.role().as_str(),
        g.rank,
        g.nnodes,
        l.gpu_count,
        g.leader_addr,
        g.dist_port
    ))
}

/// Quotes a word for a POSIX shell when it needs it (display only; nothing runs a shell).
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

fn plan_text(p: &Planned) -> String {
    let mut o = String::new();
    let l = &p.plan.launches[0];
    let s = &p.sources[0];
    let m = &s.recipe.metadata;
    let _ = writeln!(o, "Plan for {}", p.plan.model);
    let _ = writeln!(
        o,
        "  GPUs:    {} usable {} ({}); this plan uses {}",
        p.plan.usable_gpus,
        p.plan.product.as_deref().unwrap_or("?"),
        p.plan.gfx.as_deref().unwrap_or("?"),
        l.gpus
            .iter()
            .map(|g| g.ordinal.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        o,
        "  Recipe:  {} ({}, {}, {} GPU(s), {}, {})",
        s.id, m.kind, m.engine, m.gpu_count, m.precision, m.metric
    );
    if let Some(path) = &s.path {
        let _ = writeln!(o, "           {}", path.display());
    }
    if let Some(line) = node_line(l) {
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "Why:");
    for r in &p.plan.reasons {
        let _ = writeln!(o, "  - {r}");
    }
    if p.sources.len() > 1 {
        let _ = writeln!(
            o,
            "Fallbacks, in order (used when a failure says this recipe cannot work):"
        );
        for (i, (s, l)) in p.sources.iter().zip(&p.plan.launches).enumerate().skip(1) {
            let m = &s.recipe.metadata;
            let _ = writeln!(
                o,
                "  {i}. {} ({}, {} GPU(s) [{}], {}, {})",
                s.id,
                m.engine,
                m.gpu_count,
                l.gpus
                    .iter()
                    .map(|g| g.ordinal.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                m.precision,
                m.metric
            );
        }
    }
    let _ = writeln!(o, "Command (engine on 127.0.0.1:{}):", l.engine_port);
    for (k, v) in &l.env {
        let _ = writeln!(o, "  {k}={}", shell_quote(v));
    }
    let argv: Vec<String> = l.argv.iter().map(|w| shell_quote(w)).collect();
    let _ = writeln!(o, "  {}", argv.join(" "));
    o
}

/// `aim-engine dry-run`: the AIM operator's JSON shape (text: a shell script for humans).
pub fn dry_run(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    let p = planned(g, a)?;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&dry_run_json(&p, &a.select)?)?
        ),
        Format::Text => {
            let l = &p.plan.launches[0];
            println!(
                "#!/bin/sh\n# aim-engine dry-run: recipe {}\nset -e",
                p.sources[0].id
            );
            for (k, v) in &l.env {
                println!("export {k}={}", shell_quote(v));
            }
            let argv: Vec<String> = l.argv.iter().map(|w| shell_quote(w)).collect();
            println!("exec {}", argv.join(" "));
        }
    }
    Ok(exit::OK)
}

fn dry_run_json(p: &Planned, select: &SelectArgs) -> anyhow::Result<Value> {
    let s = &p.sources[0];
    let mut args = s.recipe.engine_args.clone();
    let user = resolve::user_engine_args(&plan::Request::from(select))
        .map_err(exit_error)?
        .0;
    for (k, v) in user {
        args.insert(k, v);
    }
    let filename = match &s.path {
        Some(path) => path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        None => format!("{}.yaml", s.id),
    };
    let source = if s.checkpoint.starts_with('/') {
        s.checkpoint.clone()
    } else {
        format!("hf://{}", s.checkpoint)
    };
    let size_gb = p
        .weight_bytes
        .map(|b| (b as f64 / 1e9 * 10.0).round() / 10.0);
    let mut profile = json!({
        "model": p.plan.model,
        "metadata": s.recipe.metadata,
        "engine_args": args,
        "env_vars": s.recipe.env_vars,
    });
    // AIM's operator reads `quantized_model`: the checkpoint loaded in place of the model
    // (a recipe's pre-quantized `model_id`, or MODEL under AIM_ID); absent when the same.
    if s.checkpoint != p.plan.model {
        profile["quantized_model"] = json!(s.checkpoint);
    }
    let mut entry = json!({
        "filename": filename,
        "profile": profile,
        "models": [{ "name": s.checkpoint, "source": source, "size_gb": size_gb }],
    });
    // A launch over several nodes: this node's part (AIM's one-node documents stay as they are).
    let l = &p.plan.launches[0];
    if l.nodes > 1 {
        entry["node"] = node_json(l);
    }
    Ok(json!([entry]))
}

/// `aim-engine recipes [MODEL]`: every recipe with its verdict on this host.
pub fn recipes(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    // A host without GPUs still gets the list (everything is then gpu_mismatch).
    let sources = plan::Sources::from(g);
    let topology = resolve::detect(&sources).unwrap_or_default();
    let (rows, model) = resolve::verdicts_on(
        &topology,
        &sources,
        &a.select.request().map_err(group_error)?,
    )
    .map_err(exit_error)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => print!("{}", recipes_text(&rows, model.as_deref(), &topology)),
    }
    Ok(exit::OK)
}

fn recipes_text(rows: &[RecipeVerdict], model: Option<&str>, t: &Topology) -> String {
    let mut o = String::new();
    let usable = plan::usable_gpus(t);
    let host = match usable.first() {
        Some(g) => format!("{} x {} ({})", usable.len(), g.product, g.gfx),
        None => "no usable GPU".into(),
    };
    let _ = writeln!(
        o,
        "{} recipe(s){} on this host: {host}",
        rows.len(),
        model.map(|m| format!(" for {m}")).unwrap_or_default()
    );
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        o,
        "{:<w$}  {:<7} {:<7} {:>4} {:<5} {:<10} {:<11} VERDICT",
        "ID", "ENGINE", "GPU", "N", "PREC", "METRIC", "TYPE"
    );
    for r in rows {
        let detail = if r.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.detail)
        };
        let _ = writeln!(
            o,
            "{:<w$}  {:<7} {:<7} {:>4} {:<5} {:<10} {:<11} {}{detail}",
            r.id,
            r.engine.as_str(),
            r.gpu,
            // GPUs per node, `x<nodes>` for a recipe over several nodes.
            if r.nodes > 1 {
                format!("{}x{}", r.gpu_count, r.nodes)
            } else {
                r.gpu_count.to_string()
            },
            r.precision.as_str(),
            r.metric.as_str(),
            r.kind.as_str(),
            r.verdict.as_str()
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--port"), "--port");
        assert_eq!(shell_quote(r#"{"a": 1}"#), r#"'{"a": 1}'"#);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
