//! The developer portal in a real browser: headless Chromium (Debian's `chromium`, driven by
//! its `chromedriver` over the W3C WebDriver protocol) signs in a consumer, subscribes to
//! Standard through the Stripe emulator's hosted checkout page, comes back to the portal, sees
//! the subscription turn active with its API key; after the gateway reports usage, the page
//! shows the usage and the bill so far; then it takes a screenshot
//! (`target/screenshots/portal.png`).
//!
//! Needs `chromium` and `chromium-driver` (installed by `scripts/setup.sh`; set
//! `TOLLGATE_SKIP_BROWSER=1` there and here to go without). No display is needed.

use base64::Engine;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_local::{LocalStack, StackOptions};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("chromedriver answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> Option<String> {
        let resp = self
            .http
            .post(format!("{}/element", self.base))
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(String::from)
    }

    /// Waits until `css` matches, as a user waits for the page.
    async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let url = self.cmd(reqwest::Method::GET, "/url", None).await;
                let src = self.cmd(reqwest::Method::GET, "/source", None).await;
                panic!("{css} did not appear within {timeout:?} on {url}:\n{src}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn text(&self, element: &str) -> String {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver(work: &Path) -> Driver {
    let chromedriver = which("chromedriver").expect(
        "chromedriver not found: run `bash scripts/setup.sh` (installs Debian's chromium and \
         chromium-driver), or set TOLLGATE_SKIP_BROWSER=1 to skip the portal browser test",
    );
    let port = free_port();
    let log = std::fs::File::create(work.join("chromedriver.log")).unwrap();
    let mut cmd = Command::new(chromedriver);
    cmd.arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    // Dies with this test process even if it panics or is killed.
    let child = tollgate_testkit::process::spawn_owned(cmd).expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{url}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_subscribes_in_the_portal_and_sees_its_key() {
    if std::env::var_os("TOLLGATE_SKIP_BROWSER").is_some() {
        eprintln!("TOLLGATE_SKIP_BROWSER is set: portal browser test skipped");
        return;
    }
    let started = Instant::now();
    let mut opts = StackOptions::new(repo_root());
    opts.port = 0;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let stack_ready = started.elapsed();

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let shots = target.join("screenshots");
    let work = target.join(format!("portal-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let driver = start_driver(&work).await;
    let chromium = which("chromium").expect("chromium not found: run `bash scripts/setup.sh`");

    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{}/session", driver.url))
        .json(&json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", work.join("profile").display()),
                ]
            }
        }}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
        .to_string();
    let b = Browser {
        http: http.clone(),
        base: format!("{}/session/{id}", driver.url),
    };

    // Sign in and pick Standard from the catalog.
    b.cmd(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": stack.info.portal_url})),
    )
    .await;
    let input = b.wait_for("#consumer", Duration::from_secs(20)).await;
    b.cmd(
        reqwest::Method::POST,
        &format!("/element/{input}/value"),
        Some(json!({"text": "browser-co"})),
    )
    .await;
    let signin = b.wait_for("#signin button", Duration::from_secs(5)).await;
    b.click(&signin).await;
    b.wait_for("#subscriptions p.muted", Duration::from_secs(10))
        .await;
    let subscribe = b
        .wait_for("button[data-subscribe='standard']", Duration::from_secs(10))
        .await;
    b.click(&subscribe).await;

    // Stripe's hosted page (the emulator's): pay with the good card.
    let pay = b
        .wait_for("button[value='good']", Duration::from_secs(20))
        .await;
    let url = b.cmd(reqwest::Method::GET, "/url", None).await;
    assert!(
        url.as_str().unwrap().starts_with(&stack.info.emulator_url),
        "the browser is on the emulator's checkout page: {url}"
    );
    b.click(&pay).await;

    // Back on the portal: the webhook activates the subscription; the key is shown.
    let row = b
        .wait_for(
            "tr[data-product='standard'][data-status='active']",
            Duration::from_secs(30),
        )
        .await;
    let key_cell = b
        .cmd(
            reqwest::Method::POST,
            &format!("/element/{row}/element"),
            Some(json!({"using": "css selector", "value": ".api-key"})),
        )
        .await;
    let key = b.text(key_cell[ELEMENT].as_str().unwrap()).await;
    assert!(
        key.starts_with("tg_") && key.len() > 40,
        "the full key is shown: {key:?}"
    );
    let message = b.wait_for("#message", Duration::from_secs(5)).await;
    assert!(b.text(&message).await.contains("active"));

    // The gateway reports 150,000 calls; on reload the page shows the usage and the bill so far
    // ($89.95 for the first 100,000, then 50,000 × $0.001).
    let sub_id = b
        .cmd(
            reqwest::Method::GET,
            &format!("/element/{row}/attribute/data-subscription"),
            None,
        )
        .await;
    let resp = http
        .post(format!("{}/usage", stack.info.base_url))
        .bearer_auth(&stack.info.gateway_secret)
        .json(&json!({"batch_id": "browser-1", "records": [{
            "id": "r1", "subscription_id": sub_id, "meter": "api_calls", "value": 150_000,
            "timestamp": stack.now().to_rfc3339()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    b.cmd(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": stack.info.portal_url})),
    )
    .await;
    let bill = b
        .wait_for(
            "tr[data-product='standard'][data-status='active'] td.bill",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(b.text(&bill).await, "$139.95");
    let row = b
        .wait_for(
            "tr[data-product='standard'][data-status='active']",
            Duration::from_secs(5),
        )
        .await;
    assert!(b.text(&row).await.contains("150,000 api_calls"));

    let png = b.cmd(reqwest::Method::GET, "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = shots.join("portal.png");
    std::fs::write(&shot, &png).unwrap();
    let _ = http
        .delete(format!("{}/session/{id}", driver.url))
        .send()
        .await;

    // What the browser saw is what tollgate stored: active, and the key shown is its key.
    let (status, body) = {
        let resp = http
            .get(format!(
                "{}/consumers/browser-co/subscriptions",
                stack.info.base_url
            ))
            .bearer_auth(&stack.info.portal_secret)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    let sub = &body["subscriptions"][0];
    assert_eq!(sub["status"], "active");
    let prefix = sub["keys"][0]["prefix"].as_str().unwrap();
    assert!(key.starts_with(prefix), "{key} / {prefix}");
    eprintln!(
        "portal e2e: stack up in {:.1} s, whole test {:.1} s, screenshot {} ({} bytes)",
        stack_ready.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        shot.display(),
        png.len()
    );
    drop(driver);
    let _ = std::fs::remove_dir_all(&work);
}
