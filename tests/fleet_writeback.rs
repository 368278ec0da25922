//! Fleet mode, one instance cut off from etcd while the fleet moves on
//! (SPEC §9), on a real 3-member etcd: edge-1 talks to member m3 only,
//! edge-2 to m1 and m2. Killing m3 cuts edge-1 off while the other two
//! keep the quorum, so the fleet goes on changing. edge-1's local
//! rollback is written back when m3 returns — never giving the pool it
//! protected its traffic back: skipped when the fleet already took that
//! pool's traffic away, applied on top of the fleet's newer state when that
//! state still sends the pool traffic.
//!
//! And a member that stops publishing while its lease is alive (SIGSTOP)
//! is shown stale in `ctl cluster` and holds the leader's canary until it
//! publishes again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::etcd::Etcd;
use common::fleet::{green_share, history, paced_load, share, status, Fleet, Options};
use common::*;

/// edge-1 on m3 alone, edge-2 on m1 + m2, both at `split blue=50 green=50`;
/// then m3 killed, edge-1 cut off, and `rollback` on edge-1 (local, to be
/// written back).
async fn cut_off_after_a_local_rollback(tag: &str) -> Option<Fleet> {
    if let Some(why) = common::etcd::unavailable() {
        common::skip(&why);
        return None;
    }
    let etcd = Etcd::start(3);
    let endpoints = etcd.endpoints();
    let mut fleet = Fleet::on(etcd, 0, tag, Options::default()).await;
    fleet
        .add(&Options {
            endpoints: Some(vec![endpoints[2].clone()]),
            ..Options::default()
        })
        .await;
    fleet
        .add(&Options {
            endpoints: Some(endpoints[..2].to_vec()),
            ..Options::default()
        })
        .await;
    let answer = fleet.proxies[1].ctl("split blue=50 green=50").await;
    assert_eq!(answer["ok"], true, "{answer}");
    fleet
        .wait_all_at(answer["revision"].as_u64().unwrap(), Duration::from_secs(5))
        .await;

    fleet.etcd.kill(2);
    let edge1 = &fleet.proxies[0];
    let cut = eventually(Duration::from_secs(10), || async {
        status(edge1).await["cluster"]["connected"] == false
    })
    .await;
    assert!(cut, "edge-1 still connected: {}", status(edge1).await);
    let rolled = edge1.ctl("rollback green errors on edge-1").await;
    assert_eq!(rolled["ok"], true, "{rolled}");
    let s = status(edge1).await;
    assert_eq!(share(&s, "green"), 0.0, "{s}");
    assert_eq!(s["cluster"]["pending_writeback"], 1, "{s}");
    Some(fleet)
}

/// m3 back: edge-1 reconnects and has nothing left to write back.
async fn reconnect(fleet: &mut Fleet) {
    fleet.etcd.restart(2);
    fleet.etcd.wait_healthy(Duration::from_secs(20));
    let edge1 = &fleet.proxies[0];
    let done = eventually(Duration::from_secs(15), || async {
        let s = status(edge1).await;
        s["cluster"]["connected"] == true && s["cluster"]["pending_writeback"] == 0
    })
    .await;
    assert!(
        done,
        "edge-1 did not reconnect: {}\n{}",
        status(edge1).await,
        edge1.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_rollback_is_not_written_back_when_the_fleet_already_moved_away_from_the_pool() {
    let Some(mut fleet) = cut_off_after_a_local_rollback("wb-skip").await else {
        return;
    };
    // Meanwhile the fleet takes green out its own way.
    let moved = fleet.proxies[1].ctl("split blue=100 green=0").await;
    assert_eq!(moved["ok"], true, "{moved}");
    let fleet_revision = moved["revision"].as_u64().unwrap();
    reconnect(&mut fleet).await;
    fleet
        .wait_all_at(fleet_revision, Duration::from_secs(5))
        .await;
    for p in &fleet.proxies {
        assert_eq!(green_share(p).await, 0.0);
    }
    let newest = &history(&fleet.proxies[1], 1).await[0];
    assert_eq!(
        newest["revision"].as_u64(),
        Some(fleet_revision),
        "{newest}"
    );
    assert_eq!(newest["instance"], "edge-2", "{newest}");
    let log = fleet.proxies[0].log();
    assert!(
        log.contains("is not written back: the fleet's revision")
            && log.contains("already gives green no more traffic"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_rollback_is_applied_on_top_when_the_fleet_still_sends_the_pool_traffic() {
    let Some(mut fleet) = cut_off_after_a_local_rollback("wb-apply").await else {
        return;
    };
    // Meanwhile the fleet gives green MORE traffic: replaying `rollback`
    // there would go back to the fleet's target, blue=50 green=50.
    let moved = fleet.proxies[1].ctl("split blue=30 green=70").await;
    assert_eq!(moved["ok"], true, "{moved}");
    let fleet_revision = moved["revision"].as_u64().unwrap();
    reconnect(&mut fleet).await;
    let written = fleet_revision + 1;
    fleet.wait_all_at(written, Duration::from_secs(5)).await;
    for p in &fleet.proxies {
        let s = status(p).await;
        assert_eq!(share(&s, "green"), 0.0, "{s}");
        assert_eq!(share(&s, "blue"), 100.0, "{s}");
    }
    let records = history(&fleet.proxies[1], 2).await;
    assert_eq!(
        records[0]["revision"].as_u64(),
        Some(fleet_revision),
        "{records:?}"
    );
    let newest = &records[1];
    assert_eq!(newest["revision"].as_u64(), Some(written), "{newest}");
    assert_eq!(newest["instance"], "edge-1", "{newest}");
    let command = newest["command"].as_str().unwrap_or("");
    assert!(
        command.starts_with("rollback") && command.ends_with("(written back)"),
        "{newest}"
    );
    let reason = newest["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("on the fleet's revision {fleet_revision}")),
        "{newest}"
    );
    // Nothing rolls it back onto green: the fleet has no rollback target.
    let again = fleet.proxies[1].ctl("rollback").await;
    assert_eq!(again["ok"], false, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_stops_publishing_is_stale_and_holds_the_canary_until_it_publishes() {
    let options = Options {
        extra: "[guard]\nwindow = \"30s\"\nmin_requests = 10\nmax_error_rate = 5.0\n\
                [canary]\nsteps = [{ weight = 10, hold = \"1s\" }, { weight = 50, hold = \"30s\" }, { weight = 100 }]\n"
            .into(),
        // A long lease: a paused member keeps its key (and stays stale).
        cluster: "lease_ttl = \"15s\"\npublish_interval = \"200ms\"\n".into(),
        ..Options::default()
    };
    let Some(fleet) = Fleet::start("stale", options).await else {
        return;
    };
    let leader = fleet
        .one_leader(&[0, 1, 2], Duration::from_secs(20))
        .await
        .expect("one leader");
    let (hung, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let hung_name = format!("edge-{}", hung + 1);
    fleet.proxies[hung].signal("STOP");
    let leader_p = &fleet.proxies[leader];
    let shown = eventually(Duration::from_secs(10), || async {
        let c = leader_p.ctl("cluster").await;
        let members = c["members"].as_array().cloned().unwrap_or_default();
        members
            .iter()
            .any(|m| m["name"] == hung_name.as_str() && m["stale"] == true)
            && members.iter().filter(|m| m["stale"] == true).count() == 1
    })
    .await;
    assert!(
        shown,
        "{hung_name} not shown stale: {}",
        leader_p.ctl("cluster").await
    );
    let over_http = leader_p.admin_get("/cluster").await.body;
    assert!(over_http.contains("\"stale\":true"), "{over_http}");

    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = paced_load(
        vec![leader_p.listen, fleet.proxies[other].listen],
        200,
        Arc::clone(&stop),
        Arc::clone(&sent),
    );
    let started = fleet.proxies[other].ctl("canary start green").await;
    assert_eq!(started["ok"], true, "{started}");
    // The hold is over and the evidence enough: only the stale member
    // holds the step, and the leader says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let (mut held, mut seen) = (false, Vec::<String>::new());
    while !held && std::time::Instant::now() < deadline {
        let s = status(leader_p).await;
        let w = s["canary"]["waiting_for"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        held = w.contains(&hung_name) && w.contains("stopped publishing");
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status(leader_p).await;
    assert!(
        held,
        "the canary is not held by {hung_name} (waiting for: {seen:?}): {s}\n{}",
        leader_p.log()
    );
    assert_eq!(share(&s, "green"), 10.0, "{s}");
    // It publishes again: fresh, and the step goes on.
    fleet.proxies[hung].signal("CONT");
    let advanced = eventually(Duration::from_secs(10), || async {
        green_share(leader_p).await == 50.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    assert!(
        advanced,
        "the canary did not go on: {}",
        status(leader_p).await
    );
    let c = leader_p.ctl("cluster").await;
    let members = c["members"].as_array().cloned().unwrap_or_default();
    assert!(members.iter().all(|m| m["stale"] == false), "{c}");
    assert!(sent.load(Ordering::Relaxed) > 100);
}
