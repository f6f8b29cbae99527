//! `aim-engine launch`, `list`, `stop`: the host side, on the Docker Engine API.
//!
//! `launch` plans on this host's own topology (same detection and selection as `plan`) minus
//! the GPUs running aim-engine containers hold (read from their labels), takes a set of free
//! GPUs that shares an xGMI hive, and creates a container that sees only those GPUs with the
//! chosen recipe pinned (AIM_PROFILE_ID). Then it waits for the container's `/status` to say
//! ready, showing the phase, and prints the endpoint and a curl example.

use crate::cli::{Format, FormatArgs, GlobalArgs, LaunchArgs, StopArgs};
use crate::exit::{ExitError, FAILURE, GAVE_UP, OK, USAGE};
use crate::gpu::{self, Topology, VisibilityEnv};
use crate::host::alloc::{Holder, format_list};
use crate::host::docker::{self, Client};
use crate::host::launch::{LaunchError, LaunchRequest, Prepared, Seen, prepare};
use crate::host::local::{self, LocalError};
use crate::host::spec::{self, label};
use crate::host::{naming, view};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The first host port `launch` tries.
const FIRST_PORT: u16 = 8000;

fn usage(msg: impl Into<String>) -> anyhow::Error {
    ExitError::new(USAGE, msg).into()
}

fn local_error(e: LocalError) -> anyhow::Error {
    ExitError::new(e.exit_code(), e.to_string()).into()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn launch(g: &GlobalArgs, a: LaunchArgs) -> anyhow::Result<u8> {
    let Some(model) = a.select.model.clone().filter(|m| !m.trim().is_empty()) else {
        return Err(usage(
            "launch needs a MODEL: `aim-engine launch Qwen/Qwen3-32B [GPU_COUNT]`",
        ));
    };
    if let Some(n) = &a.name
        && !naming::is_valid_name(n)
    {
        return Err(usage(format!(
            "--name {n:?} is no valid container name: use letters, digits, `_`, `.` and `-`, \
             starting with a letter or digit"
        )));
    }
    let root = local::absolute(&g.root).map_err(local_error)?;
    let topo = gpu::detect(&root, &VisibilityEnv::from_process_env())
        .map_err(|e| ExitError::new(e.exit_code(), e.to_string()))?;

    if a.dry_run {
        // Without touching Docker: nothing counts as held, the name gets no suffix and the
        // port is --port or the first one tried.
        let port = a.port.unwrap_or(FIRST_PORT);
        let seen = Seen {
            root: &root,
            topo: &topo,
            holders: &[],
            taken_names: &[],
        };
        let spec = prepare(&launch_request(g, &a), &model, &seen, &|| Some(port))
            .map_err(launch_error)?
            .spec;
        match a.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&spec.to_redacted_json())?
            ),
            Format::Text => print!("{}", view::docker_run_text(&spec)),
        }
        return Ok(OK);
    }

    // Two launches at once would both see the same GPUs free: hold a host-wide lock from
    // reading the holders until the new container exists (and so holds its GPUs).
    let lock = local::launch_lock();
    runtime()?.block_on(launch_async(g, a, model, root, topo, lock))
}

async fn launch_async(
    g: &GlobalArgs,
    a: LaunchArgs,
    model: String,
    root: PathBuf,
    topo: Topology,
    lock: Option<std::fs::File>,
) -> anyhow::Result<u8> {
    let client = Client::connect(Duration::from_secs(120)).await?;
    if !client.image_exists(&a.image).await? {
        return Err(ExitError::new(
            FAILURE,
            format!(
                "image {img} not found. Build it from the aim-engine source tree: `docker build \
                 -f Dockerfile.unified -t {img} .` (or pass --image / AIM_IMAGE)",
                img = a.image
            ),
        )
        .into());
    }
    let managed = client.list_managed().await?;
    let holders: Vec<Holder> = managed
        .iter()
        .filter(|m| m.holds_gpus())
        .map(view::Managed::holder)
        .collect();
    let (names, used_ports) = client.names_and_ports().await?;
    if let Some(n) = &a.name
        && names.iter().any(|t| t == n)
    {
        return Err(usage(format!(
            "a container named {n} exists already; choose another --name or stop it \
             (`aim-engine stop {n}`)"
        )));
    }
    let pick_port = || match a.port {
        Some(p) => Some(p),
        None => spec::first_free_port(FIRST_PORT, &used_ports, &docker::port_bindable),
    };
    let seen = Seen {
        root: &root,
        topo: &topo,
        holders: &holders,
        taken_names: &names,
    };
    let prepared =
        prepare(&launch_request(g, &a), &model, &seen, &pick_port).map_err(launch_error)?;
    let spec = prepared.spec.clone();

    if let Some(hf) = spec
        .mounts
        .iter()
        .find(|m| m.target == spec::CONTAINER_HF_HOME)
    {
        // Docker refuses a bind mount of a missing folder; an empty cache is fine.
        std::fs::create_dir_all(&hf.source).map_err(|e| {
            ExitError::new(
                FAILURE,
                format!(
                    "cannot create the Hugging Face cache folder {}: {e}; pass --hf-cache DIR",
                    hf.source
                ),
            )
        })?;
    }

    client.create_and_start(&spec).await?;
    drop(lock);
    let host = docker::published_host();
    eprintln!(
        "Started {} ({} on GPU {}, recipe {}) on port {}.",
        spec.name,
        model,
        format_list(&prepared.ordinals),
        prepared.recipe_id,
        prepared.port
    );
    if a.detach {
        println!(
            "{}",
            view::ready_message(
                &spec.name,
                &host,
                prepared.port,
                &prepared.served_model,
                &prepared.ordinals
            )
            .replacen(" is ready on ", " is starting on ", 1)
        );
        println!(
            "Follow it with `aim-engine list` or http://{host}:{}/status.",
            prepared.port
        );
        return Ok(OK);
    }
    wait_ready(&client, &spec.name, &host, &prepared, a.ready_timeout).await
}

/// The library's form of `launch`'s flags.
fn launch_request(g: &GlobalArgs, a: &LaunchArgs) -> LaunchRequest {
    LaunchRequest {
        sources: g.into(),
        request: (&a.select).into(),
        image: a.image.clone(),
        name: a.name.clone(),
        hf_cache: a.hf_cache.clone(),
    }
}

fn launch_error(e: LaunchError) -> anyhow::Error {
    ExitError::new(e.exit_code(), e.to_string()).into()
}

/// Waits until the container's /status says ready (or it fails, or the timeout passes).
async fn wait_ready(
    client: &Client,
    name: &str,
    host: &str,
    p: &Prepared,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut tick = 0usize;
    let mut last_printed: Option<(String, u64)> = None;
    let mut last_print_at = Instant::now();
    let mut last_status: Option<view::StatusView> = None;
    let clear = |tty: bool| {
        if tty {
            eprint!("\r\x1b[2K");
        }
    };
    loop {
        let elapsed = start.elapsed().as_secs();
        let Some(m) = client.inspect(name).await? else {
            clear(tty);
            return Err(ExitError::new(
                FAILURE,
                format!("{name} disappeared while starting (removed by someone else?)"),
            )
            .into());
        };
        if matches!(m.state.as_str(), "exited" | "dead" | "restarting") {
            clear(tty);
            let summary = match m.exit_code {
                Some(code) => format!("the container ended with {}", view::describe_exit(code)),
                None => "the container ended".to_string(),
            };
            let since = m.started_at.as_deref().and_then(view::parse_rfc3339);
            return fail_launch(client, name, summary, last_status, since).await;
        }
        let status = docker::get_status(host, p.port, Duration::from_secs(2))
            .await
            .and_then(|b| view::parse_status(&b));
        if status.is_some() {
            // Kept: a supervisor that gives up exits at once, taking /status with it.
            last_status.clone_from(&status);
        }
        let (phase, attempt, last_log) = match &status {
            Some(s) => (s.phase.clone(), s.attempt, s.last_log_line.clone()),
            None => ("starting container".to_string(), 0, None),
        };
        if phase == "ready" {
            clear(tty);
            println!(
                "{}",
                view::ready_message(name, host, p.port, &p.served_model, &p.ordinals)
            );
            return Ok(OK);
        }
        if phase == "failed" {
            clear(tty);
            let class = status
                .as_ref()
                .and_then(|s| s.fatal.clone())
                .unwrap_or_else(|| "the supervisor gave up".into());
            return fail_launch(client, name, class, status, None).await;
        }
        let line = view::progress_line(name, &phase, attempt, elapsed, last_log.as_deref());
        if tty {
            tick += 1;
            let width = 110;
            let short: String = line.chars().take(width).collect();
            eprint!("\r\x1b[2K{} {short}", frames[tick % frames.len()]);
            let _ = std::io::stderr().flush();
        } else {
            let changed = last_printed.as_ref() != Some(&(phase.clone(), attempt));
            if changed || last_print_at.elapsed() >= Duration::from_secs(30) {
                eprintln!("{line}");
                last_printed = Some((phase.clone(), attempt));
                last_print_at = Instant::now();
            }
        }
        if start.elapsed() >= timeout {
            clear(tty);
            return Err(ExitError::new(
                FAILURE,
                format!(
                    "{name} is not ready after {} (phase {phase}); it keeps running. Follow it \
                     with `aim-engine list`, http://{host}:{}/status or `docker logs -f {name}`; \
                     stop it with `aim-engine stop {name}`",
                    view::human_duration(start.elapsed().as_secs()),
                    p.port
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Shows why the container failed (the failure class and the engine's log tail, from
/// /status or else from the container's log since its last start), stops it (kept for
/// `docker logs`) so Docker does not restart it forever, and returns the error.
async fn fail_launch(
    client: &Client,
    name: &str,
    summary: String,
    status: Option<view::StatusView>,
    since_unix: Option<i64>,
) -> anyhow::Result<u8> {
    let (mut class, mut tail) = status
        .as_ref()
        .and_then(|s| s.last_failure.clone())
        .unwrap_or_else(|| (String::new(), Vec::new()));
    if tail.is_empty() {
        tail = client
            .logs_tail(name, 30, since_unix)
            .await
            .iter()
            .map(|l| view::strip_ansi(l))
            .collect();
    }
    if class.is_empty() {
        class = view::class_from_logs(&tail).unwrap_or_else(|| "unknown".into());
    }
    eprintln!("{name} failed: {summary} (failure class: {class})");
    if !tail.is_empty() {
        eprintln!("Engine log (last lines):");
        for l in &tail {
            eprintln!("  {l}");
        }
    }
    let _ = client.stop(name, 10).await;
    Err(ExitError::new(
        GAVE_UP,
        format!(
            "{name} failed (failure class {class}; {summary}); it is stopped and kept for \
             `docker logs {name}`; remove it with `aim-engine stop {name}`"
        ),
    )
    .into())
}

pub fn list(_g: &GlobalArgs, a: &FormatArgs) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        let client = Client::connect(Duration::from_secs(60)).await?;
        let managed = client.list_managed().await?;
        let host = docker::published_host();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut rows = Vec::new();
        for m in &managed {
            let phase = match (m.state.as_str(), m.port()) {
                ("running", Some(port)) => {
                    docker::get_status(&host, port, Duration::from_millis(700))
                        .await
                        .and_then(|b| view::parse_status(&b))
                        .map(|s| s.phase)
                }
                _ => None,
            };
            rows.push(view::row(m, phase, now));
        }
        match a.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            Format::Text => print!("{}", view::render_table(&rows)),
        }
        Ok(OK)
    })
}

pub fn stop(_g: &GlobalArgs, a: &StopArgs) -> anyhow::Result<u8> {
    if !a.all && a.names.is_empty() {
        return Err(usage(
            "stop needs container names or --all (`aim-engine list` shows them)",
        ));
    }
    runtime()?.block_on(async {
        let grace = Duration::from_secs(u64::from(a.timeout));
        let client =
            Client::connect((grace + Duration::from_secs(60)).max(Duration::from_secs(120)))
                .await?;
        let names: Vec<String> = if a.all {
            client
                .list_managed()
                .await?
                .into_iter()
                .map(|m| m.name)
                .collect()
        } else {
            a.names.clone()
        };
        if names.is_empty() {
            println!("No aim-engine containers.");
            return Ok(OK);
        }
        let mut errors: Vec<(u8, String)> = Vec::new();
        for name in &names {
            match stop_one(&client, name, a).await {
                Ok(msg) => println!("{msg}"),
                Err(e) => {
                    let code = crate::exit::code_of(&e);
                    eprintln!("aim-engine: error: {e:#}");
                    errors.push((code, format!("{e:#}")));
                }
            }
        }
        match errors.as_slice() {
            [] => Ok(OK),
            [(code, msg)] if names.len() == 1 => Err(ExitError::new(*code, msg.clone()).into()),
            _ => Ok(errors.iter().map(|(c, _)| *c).max().unwrap_or(FAILURE)),
        }
    })
}

async fn stop_one(client: &Client, name: &str, a: &StopArgs) -> anyhow::Result<String> {
    let Some(m) = client.inspect(name).await? else {
        return Err(usage(format!(
            "there is no container named {name}; `aim-engine list` shows the aim-engine containers"
        )));
    };
    if m.labels.get(label::MANAGED).map(String::as_str) != Some("true") {
        return Err(usage(format!(
            "{name} is not an aim-engine container (it has no label {}=true); aim-engine \
             stops only containers it launched",
            label::MANAGED
        )));
    }
    let gpus = m.labels.get(label::GPUS).cloned().unwrap_or_default();
    client.stop(&m.id, a.timeout).await?;
    let freed = if gpus.is_empty() {
        String::new()
    } else {
        format!("; GPU {gpus} free again")
    };
    if a.keep {
        Ok(format!("Stopped {} (kept{freed})", m.name))
    } else {
        client.remove(&m.id).await?;
        Ok(format!("Stopped and removed {}{freed}", m.name))
    }
}
