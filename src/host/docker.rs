//! The IO shell of the host commands: the Docker Engine API through bollard (never the
//! docker CLI), errors translated into what to do about them, and the container's own
//! `/status` over plain HTTP.

use crate::host::spec::{ContainerSpec, label};
use crate::host::view::Managed;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the Docker client connects: DOCKER_HOST, else the default socket.
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// The host name clients use for published ports: the DOCKER_HOST host for a tcp endpoint,
/// else this machine.
pub fn published_host() -> String {
    let ep = endpoint();
    for scheme in ["tcp://", "http://", "https://"] {
        if let Some(rest) = ep.strip_prefix(scheme) {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            if !host.is_empty() {
                return host.to_string();
            }
        }
    }
    "127.0.0.1".to_string()
}

/// Turns a bollard error into words that say how to fix it.
pub fn explain(err: &DockerError, doing: &str) -> String {
    let ep = endpoint();
    let socket = ep.strip_prefix("unix://").unwrap_or(&ep).to_string();
    if let DockerError::SocketNotFoundError(path) = err {
        return format!(
            "cannot {doing}: there is no Docker socket at {path}. Is the Docker daemon running \
             (`systemctl start docker`)? If it listens elsewhere, set DOCKER_HOST (e.g. \
             DOCKER_HOST=unix:///run/user/1000/docker.sock or tcp://HOST:2375)"
        );
    }
    if let DockerError::DockerResponseServerError {
        status_code,
        message,
    } = err
    {
        return format!("cannot {doing}: Docker answered {status_code}: {message}");
    }
    // `IOError` is transparent (its source() skips the io::Error itself), so look at it
    // first, then down the chain (hyper's connect errors carry the io::Error inside).
    let mut io_err: Option<&std::io::Error> = match err {
        DockerError::IOError { err } => Some(err),
        _ => None,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while io_err.is_none()
        && let Some(e) = source
    {
        io_err = e.downcast_ref::<std::io::Error>();
        source = e.source();
    }
    if let Some(io) = io_err {
        return match io.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "cannot {doing}: permission denied on the Docker socket {socket}. Add your \
                 user to the docker group (`sudo usermod -aG docker $USER`, then log in \
                 again), run as root, or point DOCKER_HOST at a socket you may use"
            ),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
                "cannot {doing}: nothing answers at {ep} ({io}). Is the Docker daemon \
                 running (`systemctl start docker`)? If it listens elsewhere, set \
                 DOCKER_HOST"
            ),
            _ => format!("cannot {doing}: talking to Docker at {ep} failed: {io}"),
        };
    }
    format!("cannot {doing}: talking to Docker at {ep} failed: {err}")
}

/// A Docker Engine API call that failed: what we were doing, and Docker's error, shown as
/// what to do about it (`explain`). Ends the process with FAILURE.
#[derive(Debug, thiserror::Error)]
#[error("{}", explain(.err, .doing))]
pub struct DockerFailure {
    /// `connect to Docker`, `stop container NAME`, ...
    pub doing: String,
    /// Not a `source`: the message already says all of it.
    pub err: DockerError,
}

fn fail(err: DockerError, doing: &str) -> DockerFailure {
    DockerFailure {
        doing: doing.to_string(),
        err,
    }
}

fn status_code(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A connected Docker client (API version negotiated, so older daemons work).
pub struct Client {
    docker: Docker,
}

impl Client {
    /// Connects and checks that the daemon answers. `request_timeout` bounds every API call
    /// (a stop waits for the container's grace period, so it must exceed that).
    pub async fn connect(request_timeout: Duration) -> Result<Client, DockerFailure> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| fail(e, "connect to Docker"))?
            .with_timeout(request_timeout);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| fail(e, "connect to Docker"))?;
        Ok(Client { docker })
    }

    /// Every aim-engine container (running or not), by label.
    pub async fn list_managed(&self) -> Result<Vec<Managed>, DockerFailure> {
        use bollard::query_parameters::ListContainersOptions;
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{}=true", label::MANAGED)],
        );
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| fail(e, "list containers"))?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id.clone() else { continue };
            // Inspect for start time, exit code and health; a container removed meanwhile
            // simply drops out.
            if let Some(m) = self.inspect(&id).await? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names of all containers (Docker names are global) and every host port that
    /// containers publish now or will publish when they restart.
    pub async fn names_and_ports(&self) -> Result<(Vec<String>, Vec<u16>), DockerFailure> {
        use bollard::query_parameters::ListContainersOptions;
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| fail(e, "list containers"))?;
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for c in list {
            for n in c.names.unwrap_or_default() {
                names.push(n.trim_start_matches('/').to_string());
            }
            for p in c.ports.unwrap_or_default() {
                if let Some(public) = p.public_port {
                    ports.push(public);
                }
            }
            if let Some(p) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(label::PORT))
                .and_then(|p| p.parse().ok())
            {
                ports.push(p);
            }
        }
        Ok((names, ports))
    }

    /// Whether the image exists locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerFailure> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(fail(e, &format!("inspect image {image}"))),
        }
    }

    /// Creates and starts the container; returns its id. A container that was created but
    /// would not start is removed again, so it holds no name and no GPUs.
    pub async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, DockerFailure> {
        use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                spec.to_create_body(),
            )
            .await
            .map_err(|e| fail(e, &format!("create container {}", spec.name)))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self
                .docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            return Err(fail(e, &format!("start container {}", spec.name)));
        }
        Ok(created.id)
    }

    /// The container by name or id; None when Docker does not know it.
    pub async fn inspect(&self, name: &str) -> Result<Option<Managed>, DockerFailure> {
        let c = match self.docker.inspect_container(name, None).await {
            Ok(c) => c,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(fail(e, &format!("inspect container {name}"))),
        };
        let state = c.state.clone().unwrap_or_default();
        let config = c.config.clone().unwrap_or_default();
        Ok(Some(Managed {
            name: c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            id: c.id.clone().unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code,
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            started_at: state.started_at,
            image: config.image.unwrap_or_default(),
        }))
    }

    /// The last `n` lines the container printed (stdout and stderr), since `since_unix` when
    /// given (a restarted container's earlier runs are not this failure).
    pub async fn logs_tail(&self, name: &str, n: usize, since_unix: Option<i64>) -> Vec<String> {
        use bollard::query_parameters::LogsOptions;
        let mut stream = self.docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: n.to_string(),
                since: since_unix.and_then(|t| i32::try_from(t).ok()).unwrap_or(0),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => text.push_str(&chunk.to_string()),
                Err(_) => break,
            }
        }
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let skip = lines.len().saturating_sub(n);
        lines.into_iter().skip(skip).collect()
    }

    /// Stops the container (SIGTERM, then SIGKILL after `timeout_s`). Already stopped is fine.
    pub async fn stop(&self, name: &str, timeout_s: u32) -> Result<(), DockerFailure> {
        use bollard::query_parameters::StopContainerOptions;
        match self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(i32::try_from(timeout_s).unwrap_or(i32::MAX)),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) => Err(fail(e, &format!("stop container {name}"))),
        }
    }

    pub async fn remove(&self, name: &str) -> Result<(), DockerFailure> {
        use bollard::query_parameters::RemoveContainerOptions;
        self.docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| fail(e, &format!("remove container {name}")))
    }
}

/// `GET /status` on a published port; the body when it answered 2xx or 503 (the supervisor
/// answers /status in every phase), None when nothing answered in time.
pub async fn get_status(host: &str, port: u16, timeout: Duration) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let req = format!(
            "GET /status HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        ((200..300).contains(&code) || code == 503).then(|| body.to_string())
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// Whether this machine can bind `port` on all interfaces right now.
pub fn port_bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let e = DockerError::SocketNotFoundError("/var/run/docker.sock".into());
        let m = explain(&e, "list containers");
        assert!(
            m.contains("/var/run/docker.sock") && m.contains("DOCKER_HOST"),
            "{m}"
        );
        let e = DockerError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let m = explain(&e, "list containers");
        assert!(
            m.contains("permission denied") && m.contains("docker group"),
            "{m}"
        );
        let e = DockerError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let m = explain(&e, "list containers");
        assert!(m.contains("Is the Docker daemon running"), "{m}");
        let e = DockerError::DockerResponseServerError {
            status_code: 409,
            message: "Conflict. The container name is already in use".into(),
        };
        assert!(explain(&e, "create container x").contains("409"));
    }
}
