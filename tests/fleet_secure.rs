//! Fleet mode on etcd as production runs it (SPEC §9): client TLS with
//! client certificates, and authentication with a password. A real etcd
//! on loopback (tests/common/etcd.rs, certificates made with rcgen), real
//! switchyard instances and origins: a split on one instance is in force
//! on the other; a wrong CA or a wrong password is a clear error in
//! `status`/`ctl cluster` while the instance serves its own state; with a
//! password an instance starts while etcd is down, serves its last state,
//! and joins the fleet when etcd returns.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::{write_certificates, Etcd, Secure, TlsFiles};
use common::fleet::{answering_pool, count_on, revision, share, status, Fleet, Options};
use common::*;

fn tls_lines(ca: &Path, tls: Option<&TlsFiles>) -> String {
    let mut lines = format!("ca_file = \"{}\"\n", ca.display());
    if let Some(t) = tls {
        lines.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            t.client_cert.display(),
            t.client_key.display()
        ));
    }
    lines
}

fn password_lines(dir: &Path, tag: &str, password: &str) -> String {
    let file = dir.join(format!("{tag}.password"));
    // With a newline, as `echo secret > file` writes it.
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    format!(
        "username = \"root\"\npassword_file = \"{}\"\n",
        file.display()
    )
}

/// A split on edge-1 is in force on edge-2 (and answers traffic there).
async fn split_reaches_the_other(fleet: &Fleet) {
    let first = revision(&fleet.proxies[0]).await;
    fleet.wait_all_at(first, Duration::from_secs(10)).await;
    let answer = fleet.proxies[0].ctl("split blue=40 green=60").await;
    assert_eq!(answer["ok"], true, "{answer}");
    let wanted = answer["revision"].as_u64().expect("revision");
    fleet.wait_all_at(wanted, Duration::from_secs(5)).await;
    let other = status(&fleet.proxies[1]).await;
    assert_eq!(share(&other, "green"), 60.0, "{other}");
    assert_eq!(other["cluster"]["connected"], true, "{other}");
    let on_green = count_on(&fleet.proxies[1], "green", 60).await;
    assert!(
        (20..=55).contains(&on_green),
        "{on_green} of 60 on green at 60 %"
    );
}

/// `p` cannot use etcd: not connected, `last_error` says why (checked by
/// `why`), and it serves its own state (blue = 100).
async fn cut_off_with_a_clear_error(p: &Proxy, why: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut named) = (String::new(), false);
    while !named && Instant::now() < deadline {
        let s = status(p).await;
        last = s["cluster"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        named = s["cluster"]["connected"] == false && why(&last);
        if !named {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(named, "no clear error: {last:?}\n{}", p.log());
    let cluster = p.ctl("cluster").await;
    assert_eq!(
        cluster["cluster"]["last_error"].as_str(),
        Some(last.as_str()),
        "{cluster}"
    );
    for _ in 0..10 {
        assert_eq!(answering_pool(p, &[]).await, "blue");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_etcd_with_client_tls_works_and_a_wrong_ca_is_named() {
    if let Some(why) = common::etcd::unavailable() {
        common::skip(&why);
        return;
    }
    let etcd = Etcd::start_secure(
        1,
        Secure {
            tls: true,
            ..Secure::default()
        },
    );
    assert!(etcd.endpoints()[0].starts_with("https://"));
    let tls = etcd.tls().expect("TLS files");
    let options = Options {
        cluster: tls_lines(&tls.ca, Some(tls)),
        ..Options::default()
    };
    let mut fleet = Fleet::on(etcd, 2, "tls", options).await;
    split_reaches_the_other(&fleet).await;

    // A CA that did not sign etcd's certificate: refused, and said so.
    let other = write_certificates(fleet.etcd.dir(), "other");
    let tls = fleet.etcd.tls().expect("TLS files");
    let wrong_ca = Options {
        cluster: format!(
            "{}cert_file = \"{}\"\nkey_file = \"{}\"\n",
            tls_lines(&other.ca, None),
            tls.client_cert.display(),
            tls.client_key.display()
        ),
        ..Options::default()
    };
    let p = fleet.add(&wrong_ca).await;
    let error = cut_off_with_a_clear_error(p, |e| e.contains("certificate")).await;
    eprintln!("wrong CA: {error}");
    // No client certificate, where etcd asks for one: refused too.
    let no_cert = Options {
        cluster: tls_lines(&fleet.etcd.tls().expect("TLS files").ca.clone(), None),
        ..Options::default()
    };
    let p = fleet.add(&no_cert).await;
    let error = cut_off_with_a_clear_error(p, |e| !e.is_empty()).await;
    eprintln!("no client certificate: {error}");
    // The fleet was not disturbed.
    let answer = fleet.proxies[1].ctl("cutover blue").await;
    assert_eq!(answer["ok"], true, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_etcd_with_a_password_works_and_a_wrong_password_is_named() {
    if let Some(why) = common::etcd::unavailable() {
        common::skip(&why);
        return;
    }
    let etcd = Etcd::start_secure(
        1,
        Secure {
            root_password: Some("s3cret-pw".into()),
            ..Secure::default()
        },
    );
    let dir = etcd.dir().to_path_buf();
    // etcd refuses a client without a user: the test is not passing on an
    // open etcd.
    let open = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("client");
    let refused = open.kv_client().get("x", None).await;
    assert!(
        refused.is_err(),
        "etcd answered without a user: {refused:?}"
    );
    let options = Options {
        cluster: password_lines(&dir, "right", "s3cret-pw"),
        ..Options::default()
    };
    let mut fleet = Fleet::on(etcd, 2, "auth", options).await;
    split_reaches_the_other(&fleet).await;

    let wrong = Options {
        cluster: password_lines(&dir, "wrong", "not-the-password"),
        ..Options::default()
    };
    let p = fleet.add(&wrong).await;
    let error = cut_off_with_a_clear_error(p, |e| {
        e.contains("refused the credentials of user \"root\"")
            && e.contains("authentication failed")
    })
    .await;
    eprintln!("wrong password: {error}");
    let (code, text, _) = ctl_cli(&["-s", p.socket().to_str().unwrap(), "cluster"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("refused the credentials"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_password_an_instance_starts_while_etcd_is_down_and_joins_when_it_returns() {
    if let Some(why) = common::etcd::unavailable() {
        common::skip(&why);
        return;
    }
    let etcd = Etcd::start_secure(
        1,
        Secure {
            root_password: Some("s3cret-pw".into()),
            ..Secure::default()
        },
    );
    let options = Options {
        cluster: password_lines(etcd.dir(), "right", "s3cret-pw"),
        ..Options::default()
    };
    let mut fleet = Fleet::on(etcd, 2, "auth-down", options).await;
    let answer = fleet.proxies[0].ctl("split blue=70 green=30").await;
    assert_eq!(answer["ok"], true, "{answer}");
    let cached = answer["revision"].as_u64().unwrap();
    fleet.wait_all_at(cached, Duration::from_secs(5)).await;

    fleet.etcd.stop_all();
    // edge-2 restarts with etcd down: it needs a token it cannot get, and
    // starts anyway, serving its last state.
    let second = fleet.proxies.remove(1).restart().await;
    fleet.proxies.push(second);
    let s = status(&fleet.proxies[1]).await;
    assert_eq!(s["revision"].as_u64(), Some(cached), "{s}");
    assert_eq!(share(&s, "green"), 30.0, "{s}");
    assert_eq!(s["cluster"]["connected"], false, "{s}");
    let on_green = count_on(&fleet.proxies[1], "green", 60).await;
    assert!(
        (5..=35).contains(&on_green),
        "{on_green} of 60 on green at 30 %"
    );

    // etcd returns (its tokens forgotten): edge-1 changes the fleet, and
    // edge-2 authenticates, joins and applies it.
    fleet.etcd.start_all();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answer = fleet.proxies[0].ctl("split blue=20 green=80").await;
    while answer["ok"] != true && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = fleet.proxies[0].ctl("split blue=20 green=80").await;
    }
    let committed = answer["ok"] == true;
    assert!(
        committed,
        "edge-1 cannot commit after etcd returned: {answer}"
    );
    let wanted = answer["revision"].as_u64().unwrap();
    fleet.wait_all_at(wanted, Duration::from_secs(10)).await;
    let s = status(&fleet.proxies[1]).await;
    assert_eq!(share(&s, "green"), 80.0, "{s}");
    assert_eq!(s["cluster"]["connected"], true, "{s}");
    assert!(
        fleet.proxies[1].log().contains("authenticated to etcd"),
        "{}",
        fleet.proxies[1].log()
    );
}
