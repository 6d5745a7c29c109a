//! The console's API over real HTTPS on loopback, against a real `vigil-controller serve`:
//! nothing without a session or a token, roles, CSRF, revoked tokens, the login rate limit,
//! the audit of every change, and the CLI driving the controller through the API.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil_tests::fleet::Controller;

/// An HTTPS client of the console that trusts only the controller's CA, and keeps the
/// session cookie and CSRF token it logged in with.
struct Client {
    base: String,
    agent: ureq::Agent,
    cookie: Option<String>,
    csrf: Option<String>,
    token: Option<String>,
}

/// What came back: the status, the body as JSON (Null when it is not), the headers we look at.
struct Reply {
    status: u16,
    body: Value,
    set_cookie: Option<String>,
}

impl Client {
    fn new(c: &Controller) -> Self {
        let ca = ureq::tls::Certificate::from_pem(c.ca_pem().as_bytes())
            .expect("the controller's CA")
            .to_owned();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let client = Self {
            base: c.console_url(),
            agent,
            cookie: None,
            csrf: None,
            token: None,
        };
        // The console binds just after the socket the harness waits for.
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.try_call("GET", "/api/v1/session", None).is_err() {
            assert!(Instant::now() < deadline, "the console never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        client
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ureq::Error> {
        let url = format!("{}{path}", self.base);
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(c) = &self.cookie {
            headers.push(("Cookie", format!("vigil_session={c}")));
        }
        if let Some(t) = &self.csrf {
            headers.push(("X-CSRF-Token", t.clone()));
        }
        if let Some(t) = &self.token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        let text = body
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".to_owned());
        let mut resp = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req.call()?
            }
            _ => {
                let mut req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req.content_type("application/json").send(text)?
            }
        };
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            set_cookie,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Logs in, asserting it worked; keeps the cookie and CSRF token.
    fn login(c: &Controller, name: &str, password: &str) -> Self {
        let mut client = Self::new(c);
        let r = client.call(
            "POST",
            "/api/v1/login",
            Some(&json!({"name": name, "password": password})),
        );
        assert_eq!(r.status, 200, "login as {name}: {}", r.body);
        let cookie = r.set_cookie.expect("a session cookie");
        for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(cookie.contains(attr), "the cookie is {attr}: {cookie}");
        }
        let value = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
            .expect("cookie value");
        client.cookie = Some(value);
        client.csrf = r.body["csrf"].as_str().map(str::to_owned);
        assert!(client.csrf.is_some(), "a CSRF token: {}", r.body);
        client
    }

    fn with_token(c: &Controller, token: &str) -> Self {
        let mut client = Self::new(c);
        client.token = Some(token.to_owned());
        client
    }
}

fn audit(c: &Controller) -> Vec<Value> {
    let out = c.ctl(&["audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line"))
        .collect()
}

#[test]
fn every_route_but_the_login_refuses_a_caller_without_a_session_or_token() {
    let c = Controller::start_with_console().expect("controller");
    c.operator("root-admin", "admin");
    let token = c.ctl_last_line(&["operator", "token", "root-admin"]);
    let admin = Client::with_token(&c, &token);
    let doc = admin.call("GET", "/api/v1/openapi.json", None);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let paths = doc.body["paths"].as_object().expect("paths");
    assert!(
        paths.len() >= 30,
        "the document lists the API: {}",
        paths.len()
    );
    let anonymous = Client::new(&c);
    let mut forged = Client::new(&c);
    forged.cookie = Some("0".repeat(64));
    let mut checked = 0;
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let m = method.to_uppercase();
            let expect_open = path == "/api/v1/login";
            for (who, client) in [("no credentials", &anonymous), ("a forged cookie", &forged)] {
                let r = client.call(&m, &concrete, Some(&json!({})));
                if expect_open {
                    assert_ne!(r.status, 200, "{m} {concrete} with {who}: {}", r.body);
                } else {
                    assert_eq!(r.status, 401, "{m} {concrete} with {who}: {}", r.body);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 60, "{checked} route checks");
    // A route the document does not list is no way in either.
    assert_eq!(
        anonymous.call("GET", "/api/v1/nothing-here", None).status,
        401
    );
    // The console's own page is served to anyone: it holds no data.
    let page = anonymous.call("GET", "/", None);
    assert!(page.status == 200 || page.status == 503, "{}", page.status);
}

#[test]
fn roles_csrf_revoked_tokens_the_login_limit_and_the_audit_hold() {
    let c = Controller::start_with_console().expect("controller");
    let viewer_pw = c.operator("vera", "viewer");
    let responder_pw = c.operator("rui", "responder");
    let admin_pw = c.operator("ada", "admin");

    // A viewer reads, and may not contain: 403, audited with their name.
    let vera = Client::login(&c, "vera", &viewer_pw);
    assert_eq!(vera.call("GET", "/api/v1/hosts", None).status, 200);
    let refused = vera.call(
        "POST",
        "/api/v1/hosts/h1/contain",
        Some(&json!({"reason": "try"})),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("viewer"),
        "{}",
        refused.body
    );

    // A session's change without its CSRF token is refused before anything runs.
    let mut no_csrf = Client::login(&c, "rui", &responder_pw);
    no_csrf.csrf = None;
    let r = no_csrf.call(
        "POST",
        "/api/v1/hosts/h1/contain",
        Some(&json!({"reason": "x"})),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CSRF")
    );
    let mut wrong_csrf = Client::login(&c, "rui", &responder_pw);
    wrong_csrf.csrf = Some("0".repeat(32));
    assert_eq!(
        wrong_csrf
            .call("POST", "/api/v1/hosts/h1/contain", Some(&json!({})))
            .status,
        403
    );
    // With it, the responder's contain runs (no such host: refused by the service, 400).
    let rui = Client::login(&c, "rui", &responder_pw);
    let r = rui.call(
        "POST",
        "/api/v1/hosts/h1/contain",
        Some(&json!({"reason": "from the test"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no host h1")
    );
    // A responder may not push policy or manage operators.
    assert_eq!(
        rui.call(
            "POST",
            "/api/v1/operators",
            Some(&json!({"name": "eve", "role": "admin"}))
        )
        .status,
        403
    );

    // An admin makes an operator through the API; the one-time password logs them in.
    let ada = Client::login(&c, "ada", &admin_pw);
    let made = ada.call(
        "POST",
        "/api/v1/operators",
        Some(&json!({"name": "otto", "role": "viewer"})),
    );
    assert_eq!(made.status, 200, "{}", made.body);
    let otto_pw = made.body["password"].as_str().expect("password").to_owned();
    let otto = Client::login(&c, "otto", &otto_pw);
    assert_eq!(otto.call("GET", "/api/v1/audit", None).status, 200);
    // Removing an operator ends their session at once.
    assert_eq!(
        ada.call("DELETE", "/api/v1/operators/otto", None).status,
        200
    );
    assert_eq!(otto.call("GET", "/api/v1/hosts", None).status, 401);

    // A token works until it is revoked.
    let issued = ada.call("POST", "/api/v1/operators/rui/tokens", Some(&json!({})));
    assert_eq!(issued.status, 200, "{}", issued.body);
    let secret = issued.body["secret"].as_str().expect("secret").to_owned();
    let id = issued.body["token"]["id"].as_str().expect("id").to_owned();
    let script = Client::with_token(&c, &secret);
    assert_eq!(script.call("GET", "/api/v1/hosts", None).status, 200);
    assert_eq!(
        ada.call("DELETE", &format!("/api/v1/tokens/{id}"), None)
            .status,
        200
    );
    assert_eq!(script.call("GET", "/api/v1/hosts", None).status, 401);
    let forged = Client::with_token(&c, &format!("vigil_{id}_{}", "f".repeat(48)));
    assert_eq!(forged.call("GET", "/api/v1/hosts", None).status, 401);

    // Failed logins lock the name, even for the right password, and the address.
    let anyone = Client::new(&c);
    for _ in 0..5 {
        let r = anyone.call(
            "POST",
            "/api/v1/login",
            Some(&json!({"name": "vera", "password": "guess"})),
        );
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let locked = anyone.call(
        "POST",
        "/api/v1/login",
        Some(&json!({"name": "vera", "password": viewer_pw})),
    );
    assert_eq!(locked.status, 429, "{}", locked.body);

    // Logging out ends the session.
    assert_eq!(
        rui.call("POST", "/api/v1/logout", Some(&json!({}))).status,
        200
    );
    assert_eq!(rui.call("GET", "/api/v1/hosts", None).status, 401);

    // Every change and refusal is in the audit log with the operator's name and outcome.
    let log = audit(&c);
    let has = |who: &str, op: &str, outcome: &str| {
        log.iter().any(|e| {
            e["who"].as_str().unwrap_or_default().starts_with(who)
                && e["command"].as_str().unwrap_or_default().contains(op)
                && e["outcome"].as_str().unwrap_or_default().contains(outcome)
        })
    };
    assert!(
        has("vera (console)", "\"contain\"", "refused: vera is a viewer"),
        "{log:#?}"
    );
    assert!(
        has("rui (console)", "\"contain\"", "no host h1"),
        "{log:#?}"
    );
    assert!(has("ada (console)", "operator_add", "ok"), "{log:#?}");
    assert!(has("ada (console)", "token_revoke", "ok"), "{log:#?}");
    assert!(has("vera (console,", "login", "refused"), "{log:#?}");
    assert!(
        !log.iter().any(|e| e.to_string().contains(&otto_pw)),
        "no password is ever audited"
    );
}

#[test]
fn the_cli_drives_a_controller_through_its_api_with_a_token() {
    let c = Controller::start_with_console().expect("controller");
    c.operator("ops", "responder");
    c.operator("watcher", "viewer");
    let token = c.ctl_last_line(&["operator", "token", "ops"]);
    let viewer = c.ctl_last_line(&["operator", "token", "watcher"]);
    let ca = c.dir.path().join("ca.pem");
    std::fs::write(&ca, c.ca_pem()).expect("ca");
    let remote = |token: &str, args: &[&str]| {
        std::process::Command::new(vigil_tests::fleet::controller_bin())
            .args(["--controller-url", &c.console_url(), "--token", token])
            .arg("--ca")
            .arg(&ca)
            // Far from the controller's state: only the API can answer.
            .args(["--state", "/nonexistent/vigil-controller"])
            .args(args)
            .output()
            .expect("run vigil-controller")
    };
    let hosts = remote(&token, &["hosts", "--json"]);
    assert!(
        hosts.status.success(),
        "{}",
        String::from_utf8_lossy(&hosts.stderr)
    );
    let listed: Value = serde_json::from_slice(&hosts.stdout).expect("hosts JSON");
    assert!(listed.as_array().is_some_and(Vec::is_empty), "{listed}");
    let hunt = remote(&token, &["hunt", "connections where port = 4444"]);
    assert!(
        hunt.status.success(),
        "{}",
        String::from_utf8_lossy(&hunt.stderr)
    );
    let bad = remote(&token, &["hunt", "connections where port = = 1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("syntax error"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let refused = remote(&viewer, &["contain", "h1"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("403") && why.contains("viewer"), "{why}");
    // A token the controller does not know gets nothing.
    let nobody = remote("vigil_0000_1111", &["hosts"]);
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("401"));
    // And the audit says who did what, through which path.
    let log = audit(&c);
    assert!(
        log.iter().any(|e| e["who"] == "watcher (API token)"
            && e["command"]
                .as_str()
                .unwrap_or_default()
                .contains("contain")),
        "{log:#?}"
    );
}
