//! Shared test fixtures: an in-process app on a fresh store, and the real binary.

use confiance_core::catalog::Catalog;
use confiance_core::clock::ManualClock;
use confiance_core::source::{KeyDigest, SourceKind, SourceName, WriteKey};
use confiance_server::AppState;
use confiance_store::{Role, Store, Who};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The application served in-process on port 0, over a fresh SQLite store.
pub struct TestApp {
    pub base: String,
    pub state: confiance_server::Shared,
    _stop: tokio::sync::watch::Sender<bool>,
    /// Stops the workers started again by [`TestApp::start_breach_worker`].
    restarted: std::sync::Mutex<Vec<tokio::sync::watch::Sender<bool>>>,
    pub clock: ManualClock,
    pub store: Store,
    pub write_key: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(confiance_server::Options::default()).await
    }

    /// The application with deployment options (a mailer, a public URL).
    pub async fn spawn_with(options: confiance_server::Options) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let key = WriteKey::generate();
        store
            .create_source(
                &SourceName::parse("web").unwrap(),
                SourceKind::Web,
                &key.digest(),
                &key.prefix(),
            )
            .await
            .unwrap();
        store
            .put_token(&KeyDigest::of(ADMIN_TOKEN), Role::Admin, "test")
            .await
            .unwrap();
        let clock = ManualClock::new(jiff::Timestamp::now());
        let state = AppState::with_options(store.clone(), Catalog::builtin(), Arc::new(clock.clone()), options);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(confiance_server::profiles::run_resolver(state.clone(), stopped.clone()));
        tokio::spawn(confiance_server::segments::run_audience(state.clone(), stopped.clone()));
        tokio::spawn(confiance_server::breaches::run_breach_work(state.clone(), stopped));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router_state = state.clone();
        tokio::spawn(async move {
            let app = confiance_server::router(router_state).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.unwrap()
        });
        TestApp {
            base: format!("http://{addr}"),
            state,
            _stop: stop,
            restarted: std::sync::Mutex::default(),
            clock,
            store,
            write_key: key.reveal().to_owned(),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the background workers (identity resolution, the audience index, the breach
    /// worker), as when the node goes down; the HTTP server keeps answering.
    pub fn stop_workers(&self) {
        let _ = self._stop.send(true);
    }

    /// Starts a breach worker again, as a restarted node does; it runs until the app is dropped.
    pub fn start_breach_worker(&self) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(confiance_server::breaches::run_breach_work(self.state.clone(), stopped));
        self.restarted.lock().unwrap().push(stop);
    }

    /// The directory of the SQLite store.
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Creates another source and returns its write key.
    pub async fn add_source(&self, name: &str, kind: SourceKind) -> String {
        let key = WriteKey::generate();
        self.store
            .create_source(&SourceName::parse(name).unwrap(), kind, &key.digest(), &key.prefix())
            .await
            .unwrap();
        key.reveal().to_owned()
    }

    /// Posts JSON with another source's write key.
    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Waits until identity resolution has read the whole log.
    pub async fn resolved(&self) {
        for _ in 0..500 {
            let (cursor, head) = self.store.unify_status().await.unwrap();
            if cursor == head {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("identity resolution did not catch up");
    }

    /// Waits until the audience index has read everything identity resolution placed.
    pub async fn indexed(&self) {
        self.resolved().await;
        let (_, head) = self.store.unify_status().await.unwrap();
        for _ in 0..1_000 {
            let status: Value = self
                .http
                .get(self.url("/api/v1/audience"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status["built"] == true && status["feed"]["events"].as_i64() >= Some(head) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the audience index did not catch up");
    }

    /// Posts JSON with the write key in a Basic header.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .basic_auth(&self.write_key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Events of a user id, through the store.
    pub async fn events_of_user(&self, user: &str) -> Vec<confiance_store::StoredEvent> {
        self.store
            .events_of(
                confiance_store::Access::Administration,
                &Who::UserId(user.into()),
                0,
                10_000,
            )
            .await
            .unwrap()
    }
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The `confiance` binary built for these tests.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confiance"));
    cmd.env_remove("CONFIANCE_DATA_DIR")
        .env_remove("CONFIANCE_DATABASE_URL")
        .env_remove("CONFIANCE_CONFIG")
        .env_remove("CONFIANCE_LISTEN");
    cmd
}

/// A `confiance serve` process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `confiance serve` with `args` on a free port and waits until it listens.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = bin();
        cmd.arg("serve").args(args).args(["--listen", "127.0.0.1:0"]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Server::spawn(cmd, "confiance is listening")
    }

    /// Spawns `cmd` and waits for `ready` in its standard error, reading the listening address
    /// from the `addr=` field of that line.
    pub fn spawn(mut cmd: Command, ready: &str) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(&ready)
                    && let Some(addr) = line.split("addr=").nth(1)
                {
                    let addr: SocketAddr = addr.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Reads an admin endpoint as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until identity resolution has followed the whole log (and the log is not empty).
    pub async fn resolved(&self) {
        for _ in 0..600 {
            let status = self.admin_get("/api/v1/unify/status").await;
            if status["lag"] == 0 && status["head"].as_i64() > Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("identity resolution did not catch up");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a source with the CLI and returns its write key.
pub fn add_source(data_dir: &Path, name: &str, kind: &str) -> String {
    let out = bin()
        .args(["source", "add", name, "--kind", kind, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "the write key is the only line of standard output: {stdout:?}"
    );
    lines[0].to_owned()
}

/// Message ids of every event a user id has, via the admin API.
pub async fn message_ids_via_api(base: &str, user: &str) -> Vec<String> {
    events_via_api(base, "user_id", user)
        .await
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every event of a `user_id` or `anonymous_id`, via the admin API, following pages.
pub async fn events_via_api(base: &str, key: &str, value: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut events = Vec::new();
    let mut after = 0i64;
    loop {
        let resp = http
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .query(&[(key, value), ("after", &after.to_string()), ("limit", "1000")])
            .send()
            .await
            .unwrap();
        let (status, body) = read(resp).await;
        assert_eq!(status, 200, "{body}");
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_after"].as_i64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// A real SMTP server (Python's aiosmtpd) writing what it receives to a Maildir.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let python = std::env::var("CONFIANCE_TEST_PYTHON")
            .expect("CONFIANCE_TEST_PYTHON is not set: run the tests with scripts/test");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut child = std::process::Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(dir.path())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return SmtpSink { child, port, dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not start");
    }

    /// Waits for the `n`-th message and returns it.
    pub fn message(&self, n: usize) -> String {
        for _ in 0..200 {
            let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("new"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            if files.len() >= n {
                return std::fs::read_to_string(&files[n - 1]).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no message {n} arrived");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
    }
}
