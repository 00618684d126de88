//! The management console in headless Chromium, against a real registry,
//! worker, nats-server and receiver: the account admin's flow from the
//! booking platform's help pages, the delivery log updating live, and the
//! guards (tenant isolation, CSRF, sessions). Every page is screenshotted
//! at laptop and phone widths and checked with axe-core.
//!
//! Run with `cargo test -p herald-e2e --features browser --test ui`.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

mod access;
mod admin;
mod flow;
mod live;

use std::time::Duration;

use fantoccini::Locator;
use fantoccini::elements::Element;
use herald_e2e::browser::Browser;
use herald_e2e::harness::{ADMIN, Herald};
use reqwest::Method;
use serde_json::{Value, json};

/// A running Herald and a browser pointed at its console.
#[derive(Debug)]
pub struct Console {
    pub herald: Herald,
    pub browser: Browser,
}

impl Console {
    pub async fn start() -> Self {
        let herald = Herald::start(Duration::from_millis(200), 3).await;
        let browser = Browser::start(&herald.api).await.unwrap();
        Self { herald, browser }
    }

    pub async fn sign_in_as_admin(&self) {
        self.browser.sign_in(ADMIN).await.unwrap();
    }

    pub async fn close(self) {
        self.browser.close().await;
    }

    /// Creates a webhook through the API; returns (id, secret).
    pub async fn webhook(
        &self,
        account: &str,
        name: &str,
        path: &str,
        events: Value,
    ) -> (String, String) {
        let body = json!({ "name": name, "url": self.herald.receiver.url(path), "events": events });
        let hook = self
            .herald
            .ok(
                Method::POST,
                &format!("/v1/accounts/{account}/webhooks"),
                Some(body),
            )
            .await;
        (
            hook["id"].as_str().unwrap().to_owned(),
            hook["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// The row of the webhooks list whose name is `name`.
    pub async fn row(&self, name: &str) -> Element {
        let xpath = format!("//tr[td[@data-label='Name']//a[normalize-space()='{name}']]");
        self.browser
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap()
    }

    /// Opens the Actions menu of a row (or card), unless it is open, and
    /// clicks `item`.
    pub async fn action(&self, within: &Element, item: &str) {
        let menu = within.find(Locator::Css("details.menu")).await.unwrap();
        if menu.attr("open").await.unwrap().is_none() {
            menu.find(Locator::Css("summary"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
        let xpath = format!(".//a[normalize-space()='{item}']");
        within
            .find(Locator::XPath(&xpath))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// The signing secrets the API reveals, current first.
    pub async fn secrets(&self, account: &str, webhook: &str) -> Vec<String> {
        let body = self
            .herald
            .ok(
                Method::GET,
                &format!("/v1/accounts/{account}/webhooks/{webhook}/secret"),
                None,
            )
            .await;
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["secret"].as_str().unwrap().to_owned())
            .collect()
    }
}
