//! The dashboard on `GET /` in a real browser: the proxy starts, a split
//! changes over the admin socket, and headless Chromium (Debian's
//! `chromium`, installed by `.ci/run`) renders the page, whose DOM must
//! show the new split and the backends. Skipped, with the reason printed,
//! only where no chromium binary exists.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| PathBuf::from(dir).join(name))
                .find(|path| path.is_file())
        })
}

/// The DOM of `url` after the page's script ran (bounded in time).
fn rendered(browser: &PathBuf, url: &str) -> String {
    let profile = TestDir::new("chromium");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish within 60 s");
    }
    let output = child.wait_with_output().expect("chromium output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_page_shows_a_split_change_and_the_backends_in_a_real_browser() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: no chromium binary on PATH (apt-get install -y chromium)");
        return;
    };
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n\
         [split]\nblue = 100\ngreen = 0\n",
        blue.addr(),
        green.addr()
    ))
    .await;

    // The page itself: one document from the binary, nothing from elsewhere.
    let page = proxy.admin_get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for external in ["src=", "href=", "@import", "url("] {
        assert!(
            !page.body.contains(external),
            "the page loads nothing else: {external}"
        );
    }

    let answer = proxy.ctl("split blue=70 green=30").await;
    assert_eq!(answer["ok"], true, "{answer}");
    for _ in 0..20 {
        get(proxy.listen, "/", &[]).await.expect("traffic");
    }

    let url = format!("http://{}/", proxy.admin);
    let dom = tokio::task::spawn_blocking(move || rendered(&browser, &url))
        .await
        .expect("chromium task");
    let text = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
        let rest = &dom[start..];
        rest[..rest.find("</section>").unwrap_or(rest.len())].to_string()
    };
    let split = text("split");
    assert!(
        split.contains("blue 70%") && split.contains("green 30%"),
        "the rendered split is the new one: {split}"
    );
    let pools = text("pools");
    for backend in [blue.addr().to_string(), green.addr().to_string()] {
        assert!(
            pools.contains(&backend),
            "backend {backend} listed: {pools}"
        );
    }
    assert!(pools.contains(" up<"), "health shown: {pools}");
    let history = text("history");
    assert!(
        history.contains("split blue=70 green=30"),
        "the change is in the history: {history}"
    );
    assert!(text("live").contains("live"), "the page's polling ran");
    // The series behind the charts is drawn (a path per pool line).
    assert!(
        text("c-rps").contains("<path"),
        "the request-rate chart has lines"
    );
}
