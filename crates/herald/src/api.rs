//! A small client of the registry's REST API, for the commands that seed or
//! measure through it (`herald dev --demo`, `herald bench`).

use anyhow::Context as _;
use serde_json::Value;

/// The registry's API at `base` (`http://host:port`), with one bearer key.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.into(),
            key: key.into(),
        }
    }

    /// Calls `method path` with an optional JSON body; the JSON answer, or an
    /// error naming the status and the problem the API gave.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.context("the API did not answer")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "the API answered {status}: {body}");
        Ok(body)
    }
}
