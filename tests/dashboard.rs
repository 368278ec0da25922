//! The dashboard on `GET /` in a real browser: the proxy starts, a split
//! changes over the admin socket, and headless Chromium (Debian's
//! `chromium`, installed by `.ci/run`) renders the page, whose DOM must
//! show the new split and the backends. Skipped, with the reason printed,
//! only where no chromium binary exists.

mod common;

use common::browser::{chromium, rendered};
use common::*;
use std::time::Duration;

#[tokio::test]
async fn the_page_shows_a_split_change_and_the_backends_in_a_real_browser() {
    let Some(browser) = chromium() else {
        common::skip("no chromium binary on PATH (apt-get install -y chromium)");
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

    // The charts need two samples of the per-second series: wait for them
    // rather than race the sampler (a fast render once drew no line).
    let sampled = eventually(Duration::from_secs(10), || async {
        let series = proxy.admin_get("/series").await.body;
        serde_json::from_str::<serde_json::Value>(&series)
            .ok()
            .and_then(|v| v["points"].as_array().map(|p| p.len() >= 2))
            .unwrap_or(false)
    })
    .await;
    assert!(sampled, "the series has two samples");

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
    assert!(
        dom.contains("id=\"fleet-section\" hidden"),
        "no Fleet table without [cluster]"
    );
    // The series behind the charts is drawn (a path per pool line).
    assert!(
        text("c-rps").contains("<path"),
        "the request-rate chart has lines"
    );
}

/// In fleet mode (`[cluster]`, a real etcd) the page has a Fleet table: each
/// member with its applied revision, and which one leads.
#[tokio::test]
async fn in_fleet_mode_the_page_lists_the_members_and_the_leader() {
    let Some(browser) = chromium() else {
        common::skip("no chromium binary on PATH (apt-get install -y chromium)");
        return;
    };
    if let Some(why) = common::etcd::unavailable() {
        common::skip(&why);
        return;
    }
    let etcd = common::etcd::Etcd::start(1);
    let blue = origin("blue").await;
    let prefix = format!("/sy-dash/{}", std::process::id());
    let body = |name: &str| {
        format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
             [cluster]\netcd = {}\nname = \"{name}\"\nprefix = \"{prefix}\"\nlease_ttl = \"2s\"\n",
            blue.addr(),
            etcd.endpoints_toml()
        )
    };
    let one = Proxy::start(&body("edge-1")).await;
    let _two = Proxy::start(&body("edge-2")).await;
    let both_seen = eventually(Duration::from_secs(15), || async {
        let reply = one.admin_get("/cluster").await;
        serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .is_some_and(|c| {
                c["members"].as_array().map_or(0, |m| m.len()) == 2
                    && c["cluster"]["leader"].is_string()
            })
    })
    .await;
    assert!(both_seen, "/cluster lists two members and a leader");
    let leader = serde_json::from_str::<serde_json::Value>(&one.admin_get("/cluster").await.body)
        .expect("cluster JSON")["cluster"]["leader"]
        .as_str()
        .expect("a leader")
        .to_string();

    let url = format!("http://{}/", one.admin);
    let dom = tokio::task::spawn_blocking(move || rendered(&browser, &url))
        .await
        .expect("chromium task");
    let start = dom
        .find("id=\"fleet-section\"")
        .unwrap_or_else(|| panic!("no fleet section:\n{dom}"));
    let fleet = &dom[start..];
    let fleet = &fleet[..fleet.find("</section>").unwrap_or(fleet.len())];
    assert!(!fleet.contains("hidden"), "shown in fleet mode: {fleet}");
    assert!(
        fleet.contains("edge-1") && fleet.contains("edge-2"),
        "{fleet}"
    );
    assert!(
        fleet.contains(&format!("{leader} <span class=\"badge up\">leader</span>")),
        "the leader {leader} is marked: {fleet}"
    );
    assert!(fleet.contains("connected"), "{fleet}");
    drop(etcd);
}
