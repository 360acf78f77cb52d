//! A real Distribution registry (Debian's `docker-registry`, installed by
//! scripts/bootstrap) with htpasswd authentication on 127.0.0.1, for the private-image
//! tests. Docker treats 127.0.0.1 registries as insecure (plain HTTP) by default. The
//! test image is pushed with credentials passed to the engine call (never `docker login`,
//! so no client config on the shared machine keeps them) and its local tag removed, so a
//! pull really goes to the registry and really needs the password. The registry process
//! is killed and its directory removed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

pub(crate) const USERNAME: &str = "tenant";
/// Long enough, and odd enough, that finding it anywhere is no coincidence.
pub(crate) fn password() -> String {
    format!("pw-{}-Zq8xVb2LmN", std::process::id())
}

pub(crate) struct PrivateRegistry {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) password: String,
    /// Pushed references, untagged locally on drop whatever the test did.
    pushed: std::sync::Mutex<Vec<String>>,
}

impl PrivateRegistry {
    /// Starts the registry with one user ([`USERNAME`], [`password`]).
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let password = password();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USERNAME, &password])
            .output()
            .expect("htpasswd (apache2-utils; run scripts/bootstrap docker)");
        assert!(htpasswd.status.success(), "{htpasswd:?}");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("write htpasswd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: leasehold-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian docker-registry; run scripts/bootstrap docker)");
        let registry = PrivateRegistry {
            child,
            dir,
            port,
            password,
            pushed: std::sync::Mutex::default(),
        };
        registry.wait_until_answering();
        registry
    }

    fn wait_until_answering(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!(
                    "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut response = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut response).is_ok()
                {
                    assert!(
                        response.starts_with("HTTP/1.1 401"),
                        "the registry demands authentication: {response}"
                    );
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "docker-registry did not answer; log: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(USERNAME.to_owned()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.host()),
            ..Default::default()
        }
    }

    /// Pushes local image `source` as `<registry>/<repository>:v1` and removes that local
    /// tag again; returns the pushed reference.
    pub(crate) async fn push(&self, docker: &Docker, source: &str, repository: &str) -> String {
        let repo = format!("{}/{repository}", self.host());
        let reference = format!("{repo}:v1");
        self.pushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(reference.clone());
        docker
            .tag_image(
                source,
                Some(TagImageOptionsBuilder::new().repo(&repo).tag("v1").build()),
            )
            .await
            .expect("tag the test image");
        let mut push = docker.push_image(
            &repo,
            Some(PushImageOptionsBuilder::new().tag("v1").build()),
            Some(self.credentials()),
        );
        while let Some(item) = push.next().await {
            let info = item.expect("push progress");
            if let Some(error) = info.error_detail {
                panic!("push {reference}: {error:?}");
            }
        }
        self.forget_locally(docker, &reference).await;
        reference
    }

    /// Removes the local tag so that the next deploy must pull.
    pub(crate) async fn forget_locally(&self, docker: &Docker, reference: &str) {
        docker
            .remove_image(
                reference,
                Some(
                    RemoveImageOptionsBuilder::new()
                        .force(true)
                        .noprune(true)
                        .build(),
                ),
                None,
            )
            .await
            .expect("untag the pushed image");
        assert!(
            docker.inspect_image(reference).await.is_err(),
            "{reference} is gone locally"
        );
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let pushed = self
            .pushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for reference in pushed.iter() {
            // Already gone after a test that passed; only a failed one leaves a tag.
            let _ = Command::new("docker")
                .args(["rmi", "--force", "--no-prune", reference])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        drop(pushed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
