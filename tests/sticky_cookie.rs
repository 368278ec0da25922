//! `[sticky] issue_cookie`: a client without the sticky cookie is given one
//! (and its bucket) on its first answer, on both request paths, so raising
//! green's share only ever moves clients into green — for every client, not
//! only those that came with a session of their own.

mod common;
#[macro_use]
#[path = "common/proxy_path.rs"]
mod proxy_path;

use common::*;
use proxy_path::ProxyPath;
use std::collections::HashMap;

async fn start(path: ProxyPath) -> (Origin, Origin, Proxy) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start_with(
        path.server_line(),
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 90\ngreen = 10\n\
             [sticky]\nkey = \"cookie:sy\"\nissue_cookie = true\ncookie_max_age = \"1h\"\n",
            blue.addr(),
            green.addr()
        ),
    )
    .await;
    (blue, green, proxy)
}

/// The `sy=<id>` a reply sets, after checking the cookie's attributes.
fn issued(reply: &Reply) -> Option<String> {
    let set = reply.header("set-cookie")?;
    let (pair, attributes) = set.split_once("; ")?;
    assert_eq!(attributes, "Path=/; HttpOnly; SameSite=Lax; Max-Age=3600");
    let id = pair.strip_prefix("sy=")?;
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{set}"
    );
    Some(pair.to_string())
}

both_paths!(new_clients_get_a_cookie_and_keep_their_pool_as_green_grows);
async fn new_clients_get_a_cookie_and_keep_their_pool_as_green_grows(path: ProxyPath) {
    let (_blue, _green, proxy) = start(path).await;
    // 300 new clients, one request each, no cookie.
    let mut clients: Vec<(String, String)> = Vec::new();
    for _ in 0..300 {
        let reply = get(proxy.listen, "/", &[]).await.unwrap();
        assert_eq!(reply.status, 200);
        let cookie = issued(&reply).unwrap_or_else(|| panic!("no cookie: {:?}", reply.headers));
        clients.push((cookie, reply.body.trim().to_string()));
    }
    let ids: std::collections::HashSet<&String> = clients.iter().map(|(c, _)| c).collect();
    assert_eq!(ids.len(), clients.len(), "every client its own id");
    let on_green = clients.iter().filter(|(_, p)| p == "green").count();
    assert!(
        (10..=60).contains(&on_green),
        "{on_green} of 300 new clients on green at 10 %"
    );
    // With the cookie: the same pool every time, and no new cookie.
    for (cookie, pool) in clients.iter().take(40) {
        let reply = get(proxy.listen, "/", &[("cookie", cookie)]).await.unwrap();
        assert_eq!(reply.body.trim(), pool, "{cookie}");
        assert!(reply.header("set-cookie").is_none());
    }
    // Green grows: clients only ever move blue → green.
    assert_eq!(proxy.ctl("split blue=50 green=50").await["ok"], true);
    let mut moves: HashMap<(String, String), usize> = HashMap::new();
    for (cookie, before) in &clients {
        let reply = get(proxy.listen, "/", &[("cookie", &format!("a=b; {cookie}"))])
            .await
            .unwrap();
        let after = reply.body.trim().to_string();
        *moves.entry((before.clone(), after)).or_default() += 1;
    }
    let green_to_blue = moves
        .get(&("green".to_string(), "blue".to_string()))
        .copied()
        .unwrap_or(0);
    assert_eq!(green_to_blue, 0, "moves: {moves:?}");
    let now_green: usize = moves
        .iter()
        .filter(|((_, after), _)| after == "green")
        .map(|(_, n)| n)
        .sum();
    assert!(
        (105..=195).contains(&now_green),
        "{now_green} of 300 on green at 50 %: {moves:?}"
    );
}

#[tokio::test]
async fn issue_cookie_needs_a_cookie_key_and_max_age_needs_issue_cookie() {
    let dir = TestDir::new("sticky-check");
    for (sticky, needle) in [
        (
            "key = \"header:x-user\"\nissue_cookie = true\n",
            "sticky.issue_cookie: needs key = \"cookie:NAME\"",
        ),
        (
            "key = \"cookie:sy\"\ncookie_max_age = \"1h\"\n",
            "sticky.cookie_max_age: applies only with issue_cookie = true",
        ),
        (
            "key = \"cookie:s;y\"\n",
            "invalid sticky key \"cookie:s;y\"",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nsocket = \"{d}/a.sock\"\nstate_dir = \"{d}\"\n\
                 [pools.blue]\nbackends = [\"127.0.0.1:2\"]\n[split]\nblue = 100\n[sticky]\n{sticky}",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let (code, stderr) = check_file(&file);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(needle), "{needle} in:\n{stderr}");
    }
}
