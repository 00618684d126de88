//! What every page shares: the layout's header and notice, the account
//! tabs, and the formatting of times, durations and event filters.

use chrono::{DateTime, Utc};
use herald_core::{AccountId, EventFilter};

use super::session::{Flash, Viewer};
use crate::store::Account;

/// The frame of a page: its title, who is signed in, a one-time notice.
#[derive(Debug)]
pub struct Layout {
    pub title: String,
    /// None on pages seen signed out.
    pub nav: Option<Nav>,
    pub notice: Option<Notice>,
}

#[derive(Debug)]
pub struct Nav {
    pub signed_in_as: String,
    /// For the sign-out form.
    pub csrf: String,
}

#[derive(Debug)]
pub struct Notice {
    pub text: String,
    pub is_error: bool,
}

impl Layout {
    pub fn signed_out(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: None,
            notice: None,
        }
    }

    pub fn new(title: impl Into<String>, viewer: &Viewer) -> Self {
        Self {
            title: title.into(),
            nav: Some(Nav {
                signed_in_as: viewer.label.clone(),
                csrf: viewer.csrf().to_owned(),
            }),
            notice: None,
        }
    }

    /// Shows a flash's notice, if it is one.
    pub fn with_flash(mut self, flash: Option<&Flash>) -> Self {
        if let Some(Flash::Notice { text, error }) = flash {
            self.notice = Some(Notice {
                text: text.clone(),
                is_error: *error,
            });
        }
        self
    }

    pub fn with_error(mut self, text: impl Into<String>) -> Self {
        self.notice = Some(Notice {
            text: text.into(),
            is_error: true,
        });
        self
    }
}

/// The tabs of an account's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Webhooks,
    Deliveries,
    ApiKeys,
}

#[derive(Debug)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    /// The tab being shown.
    pub tab: Tab,
    /// API keys are the admin's to manage.
    pub show_keys_tab: bool,
}

impl AccountView {
    pub fn new(account: &Account, tab: Tab, viewer: &Viewer) -> Self {
        Self {
            id: account.id.to_string(),
            name: account.name.clone(),
            tab,
            show_keys_tab: viewer.is_admin(),
        }
    }

    pub fn on_webhooks(&self) -> bool {
        self.tab == Tab::Webhooks
    }

    pub fn on_deliveries(&self) -> bool {
        self.tab == Tab::Deliveries
    }

    pub fn on_keys(&self) -> bool {
        self.tab == Tab::ApiKeys
    }

    pub fn href(&self, rest: &str) -> String {
        account_href(&self.id, rest)
    }
}

/// A page that asks before an action that cannot be undone, for when
/// scripts are off (with them, a dialog asks instead).
#[derive(askama::Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub account: AccountView,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub confirm_label: &'static str,
    pub cancel_href: String,
    pub csrf: String,
}

/// `/ui/accounts/<id><rest>`.
pub fn account_href(account: &str, rest: &str) -> String {
    format!("/ui/accounts/{account}{rest}")
}

pub fn account_path(account: &AccountId, rest: &str) -> String {
    account_href(account.as_str(), rest)
}

/// `2026-12-01 15:04:05 UTC`.
pub fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The machine-readable form for `<time datetime>`.
pub fn iso(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn events_label(events: &EventFilter) -> String {
    if events.patterns().is_empty() {
        "All events".to_owned()
    } else {
        events
            .patterns()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `1.2 s`, `340 ms`.
pub fn latency(ms: u32) -> String {
    if ms >= 1000 {
        format!("{:.1} s", f64::from(ms) / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_naturally() {
        assert_eq!(latency(0), "0 ms");
        assert_eq!(latency(999), "999 ms");
        assert_eq!(latency(1250), "1.2 s");
    }
}
