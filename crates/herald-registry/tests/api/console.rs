//! The console over plain HTTP (the browser tests drive it in Chromium):
//! sessions, CSRF, tenant isolation and what forms answer. A redirect is
//! asserted, never followed.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{ADMIN_KEY, TestRegistry, WAIT, expect};

/// A signed-in console user: the session cookie and the CSRF token.
pub(crate) struct Console<'a> {
    registry: &'a TestRegistry,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(html: &str) -> String {
    field_of(html, "csrf").expect("a CSRF field")
}

/// The value of the first hidden field `name` of a page.
fn field_of(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(str::to_owned)
}

/// `name=value` of the cookie `name` set by `response`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

impl<'a> Console<'a> {
    pub(crate) async fn sign_in(registry: &'a TestRegistry, key: &str) -> Console<'a> {
        let http = no_redirects();
        let page = http
            .get(format!("{}/ui/sign-in", registry.base))
            .send()
            .await
            .unwrap();
        let (pre, _) = set_cookie(&page, "herald_sign_in").expect("a sign-in cookie");
        let csrf = csrf_of(&page.text().await.unwrap());
        let response = http
            .post(format!("{}/ui/sign-in", registry.base))
            .header(COOKIE, pre)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("csrf", &csrf),
                ("key", key),
                ("next", "/ui/accounts"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "sign-in with a good key"
        );
        let (cookie, _) = set_cookie(&response, "herald_session").expect("a session cookie");
        let mut console = Console {
            registry,
            http,
            cookie,
            csrf: String::new(),
        };
        let accounts = console.get("/ui/accounts").await;
        assert_eq!(accounts.status(), StatusCode::OK);
        console.csrf = csrf_of(&accounts.text().await.unwrap());
        console
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.registry.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// Posts `pairs` with the session's CSRF token.
    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_raw(path, &all).await
    }

    /// Sends the create-webhook form of `account`, named `submission`, with these fields.
    async fn create_webhook(
        &self,
        account: &str,
        name: &str,
        url: &str,
        submission: &str,
    ) -> reqwest::Response {
        self.post(
            &format!("/ui/accounts/{account}/webhooks"),
            &[
                ("name", name),
                ("enabled", "on"),
                ("account", account),
                ("events", "booking.created"),
                ("url", url),
                ("submission", submission),
            ],
        )
        .await
    }

    async fn post_raw(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.registry.base))
            .header(COOKIE, &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap()
    }
}

fn location(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn signing_in_sets_a_strict_session_cookie_and_signing_out_ends_it() {
    let registry = TestRegistry::start_with(|c| c.secure_cookies = true).await;
    let http = no_redirects();
    let anonymous = http
        .get(format!("{}/ui/accounts", registry.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/ui/sign-in?next=%2Fui%2Faccounts");

    let page = http
        .get(format!("{}/ui/sign-in", registry.base))
        .send()
        .await
        .unwrap();
    // Served over HTTPS, the cookies take the `__Host-` prefix (with `Path=/`, no `Domain`),
    // so a sibling subdomain cannot plant one.
    let (pre, pre_header) = set_cookie(&page, "__Host-herald_sign_in").unwrap();
    for attribute in ["Secure", "Path=/;", "HttpOnly"] {
        assert!(
            format!("{pre_header};").contains(attribute),
            "{attribute} in {pre_header}"
        );
    }
    let csrf = csrf_of(&page.text().await.unwrap());
    let sign_in = |key: &'static str, cookie: Option<String>, token: String| {
        let mut request = http
            .post(format!("{}/ui/sign-in", registry.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("csrf", &token),
                ("key", key),
                ("next", "/ui/event-types"),
            ]));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    // A wrong key is refused on the page; a post without the form's
    // cookie (another site's form) is refused outright.
    let wrong = sign_in("not-a-key-at-all-0000", Some(pre.clone()), csrf.clone())
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("This key is not valid")
    );
    let forged = sign_in(ADMIN_KEY, None, csrf.clone()).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let signed_in = sign_in(ADMIN_KEY, Some(pre), csrf).await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in), "/ui/event-types");
    let (cookie, header) = set_cookie(&signed_in, "__Host-herald_session").unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/;",
        "Max-Age=43200",
    ] {
        assert!(
            format!("{header};").contains(attribute),
            "{attribute} in {header}"
        );
    }
    assert!(!header.contains("Domain"), "{header}");
    let (_, dropped) = set_cookie(&signed_in, "__Host-herald_sign_in").unwrap();
    assert!(
        dropped.contains("Max-Age=0") && dropped.contains("Secure") && dropped.contains("Path=/"),
        "the sign-in cookie is dropped with the attributes it was set with: {dropped}"
    );
    let accounts_page = |cookie: &str| {
        http.get(format!("{}/ui/accounts", registry.base))
            .header(COOKIE, cookie)
            .send()
    };
    // The same token under the name a subdomain could set opens nothing.
    let unprefixed = cookie.replacen("__Host-herald_session", "herald_session", 1);
    let planted = accounts_page(&unprefixed).await.unwrap();
    assert_eq!(planted.status(), StatusCode::SEE_OTHER, "{unprefixed}");

    let page = accounts_page(&cookie).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let token = csrf_of(&page.text().await.unwrap());

    let out = http
        .post(format!("{}/ui/sign-out", registry.base))
        .header(COOKIE, &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/ui/sign-in");
    let (_, ended) = set_cookie(&out, "__Host-herald_session").unwrap();
    assert!(
        ended.contains("Max-Age=0") && ended.contains("Secure") && ended.contains("Path=/"),
        "{ended}"
    );
    let after = accounts_page(&cookie).await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "the old cookie opens nothing"
    );
}

#[tokio::test]
async fn a_form_post_without_its_csrf_token_changes_nothing() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let fields = [
        ("name", "Wink Stalker"),
        ("enabled", "on"),
        ("account", account.as_str()),
        ("events", "booking.created"),
        ("url", "https://my.system.com/webhook/wink"),
    ];
    let path = format!("/ui/accounts/{account}/webhooks");
    let missing = console.post_raw(&path, &fields).await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("This form has expired")
    );
    let mut wrong = vec![("csrf", "forged")];
    wrong.extend_from_slice(&fields);
    assert_eq!(
        console.post_raw(&path, &wrong).await.status(),
        StatusCode::FORBIDDEN
    );
    let listed = registry
        .admin_get(&format!("/v1/accounts/{account}/webhooks"))
        .await;
    assert_eq!(listed["data"], json!([]), "nothing was created");

    let created = console.post(&path, &fields).await;
    assert_eq!(
        created.status(),
        StatusCode::SEE_OTHER,
        "with the token it works"
    );
    assert_eq!(location(&created), path);
}

#[tokio::test]
async fn an_account_key_sees_its_own_account_and_nothing_else() {
    let registry = TestRegistry::start().await;
    let mine = registry.create_account("Cool Account").await;
    let theirs = registry.create_account("Other Account").await;
    let key = registry.create_key(&mine).await;
    let other_key = registry.create_key(&theirs).await;
    let hook = registry
        .create_webhook(&theirs, &other_key, json!({ "name": "Theirs" }))
        .await;
    let hook = hook["id"].as_str().unwrap();
    let console = Console::sign_in(&registry, &key).await;

    let accounts = console.get("/ui/accounts").await.text().await.unwrap();
    assert!(accounts.contains("Cool Account"));
    assert!(!accounts.contains("Other Account"), "only its own account");
    assert!(
        !accounts.contains("New account"),
        "account keys create no accounts"
    );

    for path in [
        format!("/ui/accounts/{theirs}/webhooks"),
        format!("/ui/accounts/{theirs}/webhooks/new"),
        format!("/ui/accounts/{theirs}/webhooks/{hook}"),
        format!("/ui/accounts/{theirs}/webhooks/{hook}/edit"),
        format!("/ui/accounts/{theirs}/deliveries"),
        format!("/ui/accounts/{theirs}/live"),
        format!("/ui/accounts/{mine}/webhooks/{hook}"),
        format!("/ui/accounts/{mine}/live?webhook={hook}"),
        "/ui/accounts/acct_not-an-id/webhooks".to_owned(),
    ] {
        assert_eq!(
            console.get(&path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // The page that says so keeps the console's navigation and the way out.
    let refused = console
        .get(&format!("/ui/accounts/{theirs}/webhooks"))
        .await
        .text()
        .await
        .unwrap();
    assert!(refused.contains("not yours to see"), "{refused}");
    assert!(
        refused.contains("Signed in as <strong>Cool Account</strong>"),
        "{refused}"
    );
    assert!(refused.contains(r#"action="/ui/sign-out""#), "{refused}");
    for path in [
        format!("/ui/accounts/{theirs}/webhooks/{hook}/remove"),
        format!("/ui/accounts/{theirs}/webhooks/{hook}/secret/reveal"),
        format!("/ui/accounts/{mine}/webhooks/{hook}/remove"),
    ] {
        assert_eq!(
            console.post(&path, &[]).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Creating into another account through the entity field is refused
    // beside the field, like any other bad choice.
    let smuggled = console
        .post(
            &format!("/ui/accounts/{mine}/webhooks"),
            &[
                ("name", "Sneaky"),
                ("account", theirs.as_str()),
                ("events", "*"),
                ("url", "https://example.com/hook"),
            ],
        )
        .await;
    assert_eq!(smuggled.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        smuggled
            .text()
            .await
            .unwrap()
            .contains("Choose one of the accounts listed.")
    );
    assert_eq!(
        console
            .get(&format!("/ui/accounts/{mine}/api-keys"))
            .await
            .status(),
        StatusCode::FORBIDDEN,
        "keys are the admin's"
    );
    let theirs_now = expect(
        registry
            .admin(
                Method::GET,
                &format!("/v1/accounts/{theirs}/webhooks/{hook}"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(theirs_now["name"], "Theirs", "untouched");
}

#[tokio::test]
async fn an_api_key_form_sent_twice_creates_one_key() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let path = format!("/ui/accounts/{account}/api-keys");
    let keys = || async {
        let listed = registry
            .admin_get(&format!("/v1/accounts/{account}/api-keys"))
            .await;
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let page = console.get(&path).await.text().await.unwrap();
    let first = field_of(&page, "submission").expect("a submission field");

    // A reload that posts the form again: one key, shown the first time only.
    let answer = console
        .post(&path, &[("name", "booking sync"), ("submission", &first)])
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.text().await.unwrap().contains("Your new API key"));
    let again = console
        .post(&path, &[("name", "booking sync"), ("submission", &first)])
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = again.text().await.unwrap();
    assert!(!again.contains("Your new API key"), "{again}");
    assert!(again.contains("This form was sent again"), "{again}");
    assert_eq!(keys().await, ["booking sync"], "created once");

    // Another showing of the form makes another key.
    let second = field_of(&again, "submission").expect("a submission field");
    assert_ne!(second, first, "each showing has a name of its own");
    let answer = console
        .post(&path, &[("name", "booking sync"), ("submission", &second)])
        .await;
    assert!(answer.text().await.unwrap().contains("Your new API key"));
    assert_eq!(keys().await.len(), 2);
}

#[tokio::test]
async fn revoking_a_key_ends_its_console_sessions() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let response = registry
        .admin(Method::POST, &format!("/v1/accounts/{account}/api-keys"))
        .json(&json!({ "name": "people" }))
        .send()
        .await
        .unwrap();
    let created = expect(response, StatusCode::CREATED).await;
    let console = Console::sign_in(&registry, created["key"].as_str().unwrap()).await;
    let path = format!("/ui/accounts/{account}/webhooks");
    assert_eq!(console.get(&path).await.status(), StatusCode::OK);
    let key_id = created["id"].as_str().unwrap();
    expect(
        registry
            .admin(
                Method::DELETE,
                &format!("/v1/accounts/{account}/api-keys/{key_id}"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let after = console.get(&path).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(location(&after).starts_with("/ui/sign-in"));
}

#[tokio::test]
async fn sessions_expire() {
    let registry =
        TestRegistry::start_with(|c| c.session_ttl = std::time::Duration::from_secs(1)).await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    herald_testkit::wait_until(WAIT, || async {
        console.get("/ui/accounts").await.status() == StatusCode::SEE_OTHER
    })
    .await
    .expect("an expired session sends to the sign-in page");
}

#[tokio::test]
async fn form_errors_keep_the_input_and_stale_edits_show_the_current_values() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let path = format!("/ui/accounts/{account}/webhooks");
    let refused = console
        .post(
            &path,
            &[
                ("name", "Wink Stalker"),
                ("enabled", "on"),
                ("account", account.as_str()),
                ("events", "booking.created"),
                ("url", "http://10.1.2.3/hook"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains(r#"id="url-error""#),
        "the URL's error is beside it"
    );
    assert!(html.contains(r#"value="Wink Stalker""#), "the name is kept");
    assert!(
        html.contains(r#"value="http://10.1.2.3/hook""#),
        "the URL is kept"
    );
    assert!(
        html.contains(r#"value="booking.created" checked"#),
        "the events are kept"
    );
    let none = console
        .post(
            &path,
            &[
                ("name", "x"),
                ("account", account.as_str()),
                ("url", "https://example.com/"),
            ],
        )
        .await;
    assert_eq!(none.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        none.text()
            .await
            .unwrap()
            .contains("Choose at least one event, or All events.")
    );

    let hook = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "First" }))
        .await;
    let id = hook["id"].as_str().unwrap();
    // Someone else saves a change after this form was shown at version 1.
    expect(
        registry
            .admin(
                Method::PATCH,
                &format!("/v1/accounts/{account}/webhooks/{id}"),
            )
            .json(&json!({ "name": "Renamed elsewhere" }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let stale = console
        .post(
            &format!("/ui/accounts/{account}/webhooks/{id}/edit"),
            &[
                ("name", "Mine"),
                ("enabled", "on"),
                ("events", "*"),
                ("url", "https://example.com/hook"),
                ("version", "1"),
            ],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let html = stale.text().await.unwrap();
    assert!(html.contains("Someone else changed this webhook"));
    assert!(
        html.contains(r#"value="Renamed elsewhere""#),
        "current values shown"
    );
    assert!(
        html.contains(r#"name="version" value="2""#),
        "at the current version"
    );
}

#[tokio::test]
async fn deep_links_survive_sign_in_and_odd_addresses_get_pages_not_errors() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let http = no_redirects();
    let deep = format!("/ui/accounts/{account}/deliveries?status=failed");
    let anonymous = http
        .get(format!("{}{deep}", registry.base))
        .send()
        .await
        .unwrap();
    let expected = format!(
        "/ui/sign-in?{}",
        serde_urlencoded::to_string([("next", deep.as_str())]).unwrap()
    );
    assert_eq!(
        location(&anonymous),
        expected,
        "the page asked for comes back"
    );

    // Signed out, a missing page offers no navigation it could not follow.
    let missing = http
        .get(format!("{}/ui/no-such-page", registry.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = missing.text().await.unwrap();
    assert!(missing.contains("<h1>Not found</h1>"), "{missing}");
    assert!(!missing.contains("Signed in as"), "{missing}");

    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    // Control characters in a path or a `next` are not followed anywhere.
    let odd = console.get("/ui/accounts/x%01y").await;
    assert_eq!(odd.status(), StatusCode::NOT_FOUND);
    let next = console.get("/ui/sign-in?next=/ui/%0A").await;
    assert_eq!(location(&next), "/ui/accounts");
    // A visit to an address that takes forms goes to its page.
    let hook = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "hook" }))
        .await;
    let id = hook["id"].as_str().unwrap();
    let visit = console
        .get(&format!("/ui/accounts/{account}/webhooks/{id}/test"))
        .await;
    assert_eq!(visit.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&visit),
        format!("/ui/accounts/{account}/webhooks/{id}")
    );
    // Other methods and unreadable queries are the console's pages too.
    let wrong = console
        .http
        .delete(format!("{}/ui/accounts", registry.base))
        .header(COOKIE, &console.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    let wrong = wrong.text().await.unwrap();
    assert!(wrong.contains("<h1>Not here</h1>"), "{wrong}");
    assert!(
        wrong.contains("Signed in as <strong>Admin</strong>"),
        "{wrong}"
    );
    let unreadable = console
        .get(&format!(
            "/ui/accounts/{account}/deliveries?status=a&status=b"
        ))
        .await;
    assert_eq!(unreadable.status(), StatusCode::BAD_REQUEST);
    assert!(
        unreadable
            .text()
            .await
            .unwrap()
            .contains("could not be read")
    );
}

#[tokio::test]
async fn a_planted_session_cookie_does_not_shadow_the_real_one() {
    let registry = TestRegistry::start().await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let both = format!("herald_session=planted; {}", console.cookie);
    let page = console
        .http
        .get(format!("{}/ui/accounts", registry.base))
        .header(COOKIE, both)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_session_follows_a_bounded_number_of_live_logs() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let live = format!("/ui/accounts/{account}/live");
    let cap = herald_registry::live::LIVE_LOGS_PER_SESSION;
    let mut open = Vec::new();
    for _ in 0..cap {
        let response = console.get(&live).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }

    let refused = console.get(&live).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = refused.text().await.unwrap();
    assert!(
        page.contains(&format!("already follows {cap} delivery logs live")),
        "{page}"
    );
    // Another session has its own.
    let other = Console::sign_in(&registry, ADMIN_KEY).await;
    assert_eq!(other.get(&live).await.status(), StatusCode::OK);

    // A page that goes frees its place once the registry sees the
    // connection close.
    drop(open.pop());
    herald_testkit::wait_until(WAIT, || async {
        console.get(&live).await.status() == StatusCode::OK
    })
    .await
    .expect("a closed live log frees its place");
    assert_eq!(open.len(), cap - 1);
}

#[tokio::test]
async fn a_create_form_sent_twice_creates_once() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let console = Console::sign_in(&registry, ADMIN_KEY).await;
    let path = format!("/ui/accounts/{account}/webhooks");
    let webhooks = || async {
        let listed = registry
            .admin_get(&format!("/v1/accounts/{account}/webhooks"))
            .await;
        let mut names: Vec<String> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let shown = |page: String| field_of(&page, "submission").expect("a submission field");
    let form_page = || async {
        let page = console.get(&format!("{path}/new")).await;
        assert_eq!(page.status(), StatusCode::OK);
        shown(page.text().await.unwrap())
    };
    // A double click: the same showing of the form, sent twice.
    let first = form_page().await;
    for _ in 0..2 {
        let answer = console
            .create_webhook(
                &account,
                "Wink Stalker",
                "https://my.system.com/webhook/wink",
                &first,
            )
            .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&answer), path);
    }
    assert_eq!(webhooks().await, ["Wink Stalker"], "created once");
    let list = console.get(&path).await.text().await.unwrap();
    assert!(
        list.contains("“Wink Stalker” is ready"),
        "the list the repeat answers with shows the new webhook's secret"
    );

    // Another showing of the form creates another webhook, even with the same fields.
    let second = form_page().await;
    assert_ne!(second, first, "each showing has a name of its own");
    let answer = console
        .create_webhook(
            &account,
            "Wink Stalker",
            "https://my.system.com/webhook/wink",
            &second,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(webhooks().await, ["Wink Stalker", "Wink Stalker"]);

    // The first showing, changed before it was sent again (the back button): a new request.
    let answer = console
        .create_webhook(
            &account,
            "Wink Watcher",
            "https://my.system.com/webhook/wink",
            &first,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        webhooks().await,
        ["Wink Stalker", "Wink Stalker", "Wink Watcher"]
    );

    // A post refused for its fields made nothing: corrected, the same showing creates.
    let third = form_page().await;
    let refused = console
        .create_webhook(&account, "Refused first", "http://10.1.2.3/hook", &third)
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        shown(refused.text().await.unwrap()),
        third,
        "the form comes back as the same showing"
    );
    let again = console
        .create_webhook(&account, "Refused first", "http://10.1.2.3/hook", &third)
        .await;
    assert_eq!(
        again.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "sent again unchanged, it is checked again"
    );
    let corrected = console
        .create_webhook(
            &account,
            "Refused first",
            "https://my.system.com/webhook/ok",
            &third,
        )
        .await;
    assert_eq!(corrected.status(), StatusCode::SEE_OTHER);
    assert_eq!(webhooks().await.len(), 4);

    // The accounts' form too.
    let accounts_page = console.get("/ui/accounts").await.text().await.unwrap();
    let account_form = shown(accounts_page);
    for _ in 0..2 {
        let answer = console
            .post(
                "/ui/accounts",
                &[("name", "Twice Sent"), ("submission", &account_form)],
            )
            .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    }
    let accounts = registry.admin_get("/v1/accounts").await;
    let named = accounts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "Twice Sent")
        .count();
    assert_eq!(named, 1, "one account from a form sent twice");
}
