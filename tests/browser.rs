//! Chromium, driven through chromedriver (WebDriver) for the console's
//! tests: one browser per test, full-page screenshots at laptop and phone
//! widths into `target/ui-screenshots/`, and an axe-core check of each page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`CHROMIUM` and
//! `CHROMEDRIVER` name other binaries) and axe-core from npm
//! (`npm ci --prefix tests/ui`, or `HERALD_AXE_JS` naming `axe.min.js`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// The widths every page is looked at: a laptop and a phone.
pub const WIDTHS: [(&str, u32, u32); 2] = [("laptop", 1366, 900), ("phone", 390, 844)];

/// An axe-core finding, as kept in the report.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Violation {
    pub id: String,
    pub impact: Option<String>,
    pub help: String,
    pub nodes: Vec<String>,
}

pub struct Browser {
    pub client: Client,
    base: String,
    driver: tokio::process::Child,
    driver_url: String,
}

fn binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/chromium"),
            ])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

const INSTALL: &str = "browser tests need Chromium and ChromeDriver: on Debian, \
     `apt-get install chromium chromium-driver` (or set CHROMIUM and CHROMEDRIVER)";

/// The workspace's `target/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-screenshots")
}

fn axe_source() -> anyhow::Result<String> {
    let path = std::env::var_os("HERALD_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read axe-core at {}: run `npm ci --prefix tests/ui` (or set HERALD_AXE_JS)",
            path.display()
        )
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, pointed at `base`
    /// (the registry's address).
    pub async fn start(base: &str) -> anyhow::Result<Self> {
        let chromedriver = binary("CHROMEDRIVER", &["chromedriver"]).context(INSTALL)?;
        let chromium =
            binary("CHROMIUM", &["chromium", "chromium-browser", "chrome"]).context(INSTALL)?;
        let port = herald_testkit::free_port()?;
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group, so that dropping the browser ends
            // Chromium's processes with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}; {INSTALL}", chromedriver.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        herald_testkit::wait_until(WAIT, || async {
            http.get(format!("{url}/status")).send().await.is_ok()
        })
        .await
        .context("chromedriver did not answer")?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    "--window-size=1366,900", "--force-device-scale-factor=1",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("cannot open a Chromium session")?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            driver,
            driver_url: url,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn open(&self, path: &str) -> anyhow::Result<()> {
        self.client.goto(&self.url(path)).await?;
        Ok(())
    }

    /// The page's path and query.
    pub async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// Signs in from the sign-in page with `key`.
    pub async fn sign_in(&self, key: &str) -> anyhow::Result<()> {
        self.open("/ui/sign-in").await?;
        self.client
            .find(Locator::Id("key"))
            .await?
            .send_keys(key)
            .await?;
        self.click_button("Sign in").await?;
        self.wait_for_path("/ui/accounts").await
    }

    pub async fn click_button(&self, label: &str) -> anyhow::Result<()> {
        let xpath = format!("//button[normalize-space()='{label}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await?
            .click()
            .await?;
        Ok(())
    }

    pub async fn click_link(&self, text: &str) -> anyhow::Result<()> {
        let xpath = format!("//a[normalize-space()='{text}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    pub async fn value(&self, css: &str) -> anyhow::Result<String> {
        let element = self.client.find(Locator::Css(css)).await?;
        Ok(element.prop("value").await?.unwrap_or_default())
    }

    pub async fn is_checked(&self, css: &str) -> anyhow::Result<bool> {
        Ok(self
            .client
            .find(Locator::Css(css))
            .await?
            .is_selected()
            .await?)
    }

    /// Types into a field after clearing it.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.client.find(Locator::Css(css)).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Waits until the page is at `path` (a prefix, before any query).
    pub async fn wait_for_path(&self, path: &str) -> anyhow::Result<()> {
        let found = herald_testkit::wait_until(WAIT, || async {
            self.client
                .current_url()
                .await
                .is_ok_and(|url| url.path() == path)
        })
        .await;
        match found {
            Ok(()) => Ok(()),
            Err(_) => bail!(
                "the page did not reach {path}; it is at {}",
                self.path().await?
            ),
        }
    }

    /// Waits until the element matching `css` exists and its text contains
    /// `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        let found = herald_testkit::wait_for(WAIT, || async {
            let text = self.text(css).await.ok()?;
            text.contains(needle).then_some(text)
        })
        .await;
        match found {
            Ok(text) => Ok(text),
            Err(_) => bail!(
                "{css} never showed {needle:?}; it shows {:?} at {}",
                self.text(css).await.unwrap_or_default(),
                self.path().await?
            ),
        }
    }

    /// The text of the alert (a confirm dialog) that is open now.
    pub async fn alert_text(&self) -> anyhow::Result<String> {
        herald_testkit::wait_for(WAIT, || async { self.client.get_alert_text().await.ok() })
            .await
            .context("no dialog opened")
    }

    /// Sends a Chrome DevTools command through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        let session = self
            .client
            .session_id()
            .await?
            .context("the browser has no session")?;
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver_url
            ))
            .json(&json!({ "cmd": cmd, "params": params }))
            .send()
            .await
            .with_context(|| format!("sending {cmd}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("reading {cmd}"))?;
        if !status.is_success() {
            bail!("{cmd} failed: {body}");
        }
        Ok(body["value"].clone())
    }

    /// Looks at the current page as its users would: at each width (the
    /// phone one emulated as a mobile device), a full-page screenshot into
    /// `target/ui-screenshots/<name>-<width>.png` and an axe-core check.
    /// Fails on serious or critical violations; every finding is written to
    /// `<name>.axe.json`.
    pub async fn inspect(&self, name: &str) -> anyhow::Result<Vec<Violation>> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let axe = axe_source()?;
        let mut found: Vec<Violation> = Vec::new();
        for (label, width, height) in WIDTHS {
            self.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1,
                        "mobile": label == "phone" }),
            )
            .await?;
            let full = self
                .client
                .execute("return document.documentElement.scrollHeight;", vec![])
                .await?
                .as_u64()
                .unwrap_or(u64::from(height))
                .clamp(u64::from(height), 8000);
            let shot = self
                .cdp(
                    "Page.captureScreenshot",
                    json!({ "format": "png", "captureBeyondViewport": true,
                            "clip": { "x": 0, "y": 0, "width": width, "height": full, "scale": 1 } }),
                )
                .await?;
            let png = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                shot["data"].as_str().context("a screenshot without data")?,
            )?;
            let file = dir.join(format!("{name}-{label}.png"));
            std::fs::write(&file, png).with_context(|| format!("writing {}", file.display()))?;
            for violation in self.axe(&axe).await? {
                if !found.iter().any(|v| v.id == violation.id) {
                    found.push(violation);
                }
            }
        }
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await?;
        std::fs::write(
            dir.join(format!("{name}.axe.json")),
            serde_json::to_string_pretty(&found)?,
        )?;
        let serious: Vec<&Violation> = found
            .iter()
            .filter(|v| matches!(v.impact.as_deref(), Some("serious" | "critical")))
            .collect();
        if !serious.is_empty() {
            bail!("axe-core found serious problems on {name}: {serious:#?}");
        }
        Ok(found)
    }

    async fn axe(&self, source: &str) -> anyhow::Result<Vec<Violation>> {
        let loaded = self
            .client
            .execute("return typeof window.axe === 'object';", vec![])
            .await?;
        if loaded != Value::Bool(true) {
            self.client.execute(source, vec![]).await?;
        }
        let result = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   axe.run(document, { resultTypes: ["violations"] })
                     .then(r => done(JSON.stringify(r.violations.map(v => ({
                        id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(" ")) })))))
                     .catch(e => done("axe failed: " + e));"#,
                vec![],
            )
            .await?;
        let text = result.as_str().context("axe returned nothing")?;
        serde_json::from_str(text).with_context(|| text.to_owned())
    }

    /// Ends the session and the browser.
    pub async fn close(mut self) {
        let client = self.client.clone();
        if let Err(error) = client.close().await {
            eprintln!("closing the browser: {error}");
        }
        self.kill_group();
    }

    fn kill_group(&mut self) {
        // chromedriver leads its process group; Chromium is in it. Not by
        // running `kill`: procps-ng 4.0.2 reads `kill -KILL -<pgid>` as
        // kill(-1, SIGKILL), every process the user may signal.
        if let Some(pgid) = self.driver.id().and_then(|pid| i32::try_from(pid).ok())
            && pgid > 1
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}
