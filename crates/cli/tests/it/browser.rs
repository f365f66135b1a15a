//! The cookie banner in a real Chromium, as a visitor of the demo shop meets it.
//!
//! `tests/clients/browser_consent.mjs` (playwright-core driving Debian's chromium) does the
//! visiting and checks what the browser stores and sends and what the server keeps; this test
//! gives it a real `confiance serve` with a `web` source, then restarts that server on the same
//! store with a new notice version, so that the same visitor must be asked again. Screenshots
//! land in `tests/artifacts/`.

use crate::support::{ADMIN_TOKEN, Server, add_source};
use std::path::{Path, PathBuf};
use std::process::Command;

const CATALOG: &str = include_str!("../../../../catalog/default.toml");
const NEW_NOTICE: &str = "2099-01-01";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which installs Chromium and playwright-core")
    })
}

fn repo_dir(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The built-in catalog as a configuration file, with another notice version when given.
fn config_file(dir: &Path, notice_version: Option<&str>) -> PathBuf {
    let text = match notice_version {
        None => CATALOG.to_owned(),
        Some(version) => {
            let line = CATALOG
                .lines()
                .find(|l| l.starts_with("notice_version = "))
                .expect("the built-in catalog declares a notice_version");
            assert_ne!(line, format!("notice_version = \"{version}\""));
            CATALOG.replacen(line, &format!("notice_version = \"{version}\""), 1)
        }
    };
    let path = dir.join(format!("confiance-{}.toml", notice_version.unwrap_or("builtin")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs one phase of the browser script and fails with its report when a check failed.
fn run_phase(server: &Server, args: &[&str]) {
    let node = required_env("CONFIANCE_TEST_NODE");
    let out = Command::new(node)
        .arg(repo_dir("tests/clients/browser_consent.mjs"))
        .args(["--base", &server.base, "--admin-token", ADMIN_TOKEN])
        .args(args)
        .env("CONFIANCE_TEST_CHROMIUM", required_env("CONFIANCE_TEST_CHROMIUM"))
        .env("NODE_PATH", required_env("CONFIANCE_TEST_NODE_MODULES"))
        .current_dir(repo_dir("tests/clients"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One JSON line per check: shown with `--nocapture`, and in full when one failed.
    print!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed ({}):\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(
        !stdout.trim().is_empty() && stdout.lines().all(|l| l.contains("\"ok\":true")),
        "every line of the report is a passed check:\n{stdout}"
    );
}

#[test]
fn the_cookie_banner_asks_first_and_keeps_only_what_was_accepted() {
    for name in [
        "CONFIANCE_TEST_NODE",
        "CONFIANCE_TEST_NODE_MODULES",
        "CONFIANCE_TEST_CHROMIUM",
    ] {
        required_env(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // The demo shop page is only served with the write key it should send with.
    let write_key = add_source(&data_dir, "web", "web");
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let state = dir.path().join("visitor.json");
    let state = state.to_str().unwrap();
    let artifacts = repo_dir("tests/artifacts");
    let artifacts = artifacts.to_str().unwrap();
    let env = [("CONFIANCE_ADMIN_TOKEN", ADMIN_TOKEN)];

    let first = config_file(dir.path(), None);
    let server = Server::start(
        &[
            "--data-dir",
            &data_dir,
            "--config",
            first.to_str().unwrap(),
            "--shop-write-key",
            &write_key,
        ],
        &env,
    );
    run_phase(
        &server,
        &["--phase", "main", "--state", state, "--artifacts", artifacts],
    );
    drop(server);

    let bumped = config_file(dir.path(), Some(NEW_NOTICE));
    let server = Server::start(
        &[
            "--data-dir",
            &data_dir,
            "--config",
            bumped.to_str().unwrap(),
            "--shop-write-key",
            &write_key,
        ],
        &env,
    );
    run_phase(
        &server,
        &[
            "--phase",
            "bump",
            "--state",
            state,
            "--artifacts",
            artifacts,
            "--notice-version",
            NEW_NOTICE,
        ],
    );
}
