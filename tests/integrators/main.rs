//! The signature checks of docs/integrators.md, run as written with the stock Standard
//! Webhooks libraries (Python, Node, Rust) against a real delivery from a registry and worker:
//! each accepts the delivery and refuses it with one byte of its body changed. The snippets are
//! files under docs/snippets/ that the page shows verbatim, which the first test checks.
//!
//! Needs Python with `standardwebhooks` (`HERALD_TEST_PYTHON`, by default the CI venv's) and
//! Node with this folder's packages (`npm ci --prefix tests/integrators`); `.ci/run` installs
//! both.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

use std::path::{Path, PathBuf};
use std::process::Command;

use herald_e2e::harness::{Herald, WAIT};
use serde_json::json;

#[path = "../../docs/snippets/verify.rs"]
mod rust_snippet;

const PAGE: &str = include_str!("../../docs/integrators.md");
const PYTHON: &str = include_str!("../../docs/snippets/verify.py");
const NODE: &str = include_str!("../../docs/snippets/verify.mjs");
const RUST: &str = include_str!("../../docs/snippets/verify.rs");
const GO: &str = include_str!("../../docs/snippets/verify.go");

/// One real delivery as the receiver got it.
struct Delivery {
    secret: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Delivery {
    async fn receive() -> Delivery {
        let herald = Herald::start(std::time::Duration::from_millis(200), 2).await;
        let account = herald.account().await;
        let (hook, secret) = herald.webhook(&account, "/in", json!([])).await;
        herald.wait_for_spec(&hook, 1).await;
        herald
            .publish(&account, "booking.created", json!({ "booking_id": "bk_1" }))
            .await;
        let request = herald
            .receiver
            .wait_for_requests("/in", 1, WAIT)
            .await
            .unwrap()
            .remove(0);
        let headers = ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .map(|name| (name, request.header(name).unwrap().to_owned()))
            .to_vec();
        Delivery {
            secret,
            body: request.body.to_vec(),
            headers,
        }
    }

    /// The same delivery with one byte of its body changed.
    fn altered(&self) -> Vec<u8> {
        let mut body = self.body.clone();
        let last = body.len() - 2;
        body[last] = if body[last] == b'1' { b'2' } else { b'1' };
        body
    }

    /// The body and headers as files, for a snippet run in another language.
    fn files(&self, body: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let body_path = dir.path().join("body.json");
        let headers_path = dir.path().join("headers.json");
        std::fs::write(&body_path, body).unwrap();
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        std::fs::write(
            &headers_path,
            serde_json::Value::Object(headers).to_string(),
        )
        .unwrap();
        (dir, body_path, headers_path)
    }
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs `program` with the snippet's secret in its environment; its standard output when it
/// succeeded, its standard error when it failed.
fn run(mut command: Command, secret: &str, what: &str, hint: &str) -> Result<String, String> {
    let output = command
        .env("HERALD_WEBHOOK_SECRET", secret)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}; {hint}"));
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

#[test]
fn the_page_shows_the_snippets_that_are_run() {
    for (name, snippet) in [
        ("Python", PYTHON),
        ("Node", NODE),
        ("Rust", RUST),
        ("Go", GO),
    ] {
        assert!(
            PAGE.contains(snippet.trim_end()),
            "docs/integrators.md does not show the {name} snippet of docs/snippets/ as it is"
        );
    }
}

#[tokio::test]
async fn the_rust_snippet_accepts_a_delivery_and_refuses_an_altered_one() {
    let delivery = Delivery::receive().await;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &delivery.headers {
        headers.insert(*name, value.parse().unwrap());
    }
    rust_snippet::verify(&delivery.secret, &delivery.body, &headers).unwrap();
    assert!(rust_snippet::verify(&delivery.secret, &delivery.altered(), &headers).is_err());
}

#[tokio::test]
async fn the_python_snippet_accepts_a_delivery_and_refuses_an_altered_one() {
    let python = std::env::var_os("HERALD_TEST_PYTHON").map_or_else(
        || workspace().join("target/venv-ci/bin/python"),
        PathBuf::from,
    );
    let hint = format!(
        "Python with standardwebhooks is expected at {} (python3 -m venv target/venv-ci && \
         target/venv-ci/bin/pip install standardwebhooks==1.1.0), or set HERALD_TEST_PYTHON",
        python.display()
    );
    let harness = "\nimport json, sys\n\
                   body = open(sys.argv[1], 'rb').read()\n\
                   headers = json.load(open(sys.argv[2]))\n\
                   print(handle(body, headers)['type'])\n";
    let delivery = Delivery::receive().await;
    for (body, accepted) in [(delivery.body.clone(), true), (delivery.altered(), false)] {
        let (_dir, body_path, headers_path) = delivery.files(&body);
        let mut command = Command::new(&python);
        command
            .arg("-c")
            .arg(format!("{PYTHON}{harness}"))
            .arg(&body_path)
            .arg(&headers_path);
        let result = run(command, &delivery.secret, "Python", &hint);
        if accepted {
            assert_eq!(result, Ok("booking.created".to_owned()));
        } else {
            let err = result.unwrap_err();
            assert!(err.contains("WebhookVerificationError"), "{err}");
        }
    }
}

#[tokio::test]
async fn the_node_snippet_accepts_a_delivery_and_refuses_an_altered_one() {
    let packages = workspace().join("tests/integrators");
    let hint = format!(
        "Node with standardwebhooks is expected (npm ci --prefix {})",
        packages.display()
    );
    assert!(
        packages.join("node_modules/standardwebhooks").exists(),
        "standardwebhooks is not installed; {hint}"
    );
    let harness = "\nimport { readFileSync } from \"node:fs\";\n\
                   const body = readFileSync(process.argv[1], \"utf8\");\n\
                   const headers = JSON.parse(readFileSync(process.argv[2], \"utf8\"));\n\
                   console.log(handle(body, headers).type);\n";
    let delivery = Delivery::receive().await;
    for (body, accepted) in [(delivery.body.clone(), true), (delivery.altered(), false)] {
        let (_dir, body_path, headers_path) = delivery.files(&body);
        let mut command = Command::new("node");
        // Code given with --eval resolves its imports from the working directory.
        command
            .current_dir(&packages)
            .arg("--input-type=module")
            .arg("--eval")
            .arg(format!("{NODE}{harness}"))
            .arg(&body_path)
            .arg(&headers_path);
        let result = run(command, &delivery.secret, "node", &hint);
        if accepted {
            assert_eq!(result, Ok("booking.created".to_owned()));
        } else {
            let err = result.unwrap_err();
            assert!(err.contains("WebhookVerificationError"), "{err}");
        }
    }
}
