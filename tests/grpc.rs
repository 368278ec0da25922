//! gRPC failures look like failures: an h2 origin that answers HTTP 200
//! with a `grpc-status` in its trailers (or, trailers-only, in its head)
//! is counted by the code — an error for the pool's counts, the metrics,
//! passive health and the guard when the code is one of the pool's
//! `grpc_error_codes`, a success otherwise.

mod common;

use bytes::Bytes;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// A cleartext HTTP/2 origin in the manner of a gRPC server: every answer
/// is HTTP 200; `/status/N` ends with trailer `grpc-status: N`, `/only/N`
/// is a trailers-only answer (the status in the head, no body), and
/// `/call` ends with this origin's own `code`.
async fn grpc_origin(code: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let mut path = request.uri().path().to_string();
                    if path == "/call" {
                        path = format!("/status/{code}");
                    }
                    let head = |status: Option<&str>| {
                        let mut r = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc");
                        if let Some(s) = status {
                            r = r.header("grpc-status", s);
                        }
                        r.body(()).unwrap()
                    };
                    if let Some(code) = path.strip_prefix("/only/") {
                        let _ = respond.send_response(head(Some(code)), true);
                    } else if let Some(code) = path.strip_prefix("/status/") {
                        let Ok(mut body) = respond.send_response(head(None), false) else {
                            continue;
                        };
                        let _ = body.send_data(Bytes::from_static(b"\0\0\0\0\0"), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", code.parse().unwrap());
                        let _ = body.send_trailers(trailers);
                    } else {
                        let _ = respond.send_response(head(None), true);
                    }
                }
            });
        }
    });
    addr
}

/// One gRPC-style POST over HTTP/2 (prior knowledge) to the proxy; the
/// HTTP status and the `grpc-status` the client got (trailer or head).
async fn call(proxy: SocketAddr, path: &str) -> (u16, Option<String>) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answer in time")
        .expect("response");
    let status = response.status().as_u16();
    let mut grpc = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Ok(Some(trailers)) = body.trailers().await {
        grpc = trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string());
    }
    (status, grpc)
}

async fn pool_figures(proxy: &Proxy) -> (u64, u64) {
    let status = proxy.ctl("status").await;
    let window = &status["pools"][0]["window"];
    (
        window["requests"].as_u64().unwrap_or(0),
        window["errors"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_count_by_code_in_trailers_and_in_trailers_only_answers() {
    let origin = grpc_origin("0").await;
    let proxy = Proxy::start_with(
        "h2c = true\n",
        &format!(
            "[pools.grpc]\nbackends = [\"{origin}\"]\nprotocol = \"h2\"\n[split]\ngrpc = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n"
        ),
    )
    .await;
    // Relayed as the origin sent them.
    assert_eq!(
        call(proxy.listen, "/status/14").await,
        (200, Some("14".into()))
    );
    assert_eq!(
        call(proxy.listen, "/only/13").await,
        (200, Some("13".into()))
    );
    // Default codes: UNAVAILABLE and INTERNAL are errors; OK, NOT_FOUND
    // and INVALID_ARGUMENT (the caller's fault) are not.
    for path in [
        "/status/14",
        "/only/13",
        "/status/0",
        "/status/5",
        "/only/3",
        "/plain",
    ] {
        let (status, _) = call(proxy.listen, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let counted = eventually(Duration::from_secs(5), || async {
        pool_figures(&proxy).await == (8, 4)
    })
    .await;
    assert!(
        counted,
        "8 requests, 4 errors expected; got {:?}",
        pool_figures(&proxy).await
    );
    let metrics = proxy.admin_get("/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_requests_total{pool=\"grpc\",class=\"5xx\"}"
        ),
        4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_chooses_its_grpc_error_codes_and_bad_ones_are_refused() {
    let origin = grpc_origin("0").await;
    let proxy = Proxy::start_with(
        "h2c = true\n",
        &format!(
            "[pools.grpc]\nbackends = [\"{origin}\"]\nprotocol = \"h2\"\ngrpc_error_codes = [\"NOT_FOUND\", 16]\n\
             [split]\ngrpc = 100\n[health]\nenabled = false\neject_consecutive_failures = 0\n"
        ),
    )
    .await;
    for path in ["/status/14", "/status/5", "/only/16", "/status/0"] {
        call(proxy.listen, path).await;
    }
    let counted = eventually(Duration::from_secs(5), || async {
        pool_figures(&proxy).await == (4, 2)
    })
    .await;
    assert!(counted, "{:?}", pool_figures(&proxy).await);

    let dir = TestDir::new("grpc-check");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        proxy.config_text(&format!(
            "[pools.grpc]\nbackends = [\"{origin}\"]\ngrpc_error_codes = [0, 17, \"NOPE\"]\n[split]\ngrpc = 100\n"
        )),
    )
    .unwrap();
    let (code, stderr) = check_file(&file);
    assert_eq!(code, Some(1), "{stderr}");
    for needle in [
        "grpc_error_codes[0]: 0 (OK) is a success",
        "grpc_error_codes[1]: 17: expected a gRPC status code",
        "grpc_error_codes[2]: \"NOPE\": expected",
    ] {
        assert!(stderr.contains(needle), "{needle} in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_rolls_back_a_canary_whose_grpc_calls_fail_with_http_200() {
    let (good, bad) = (grpc_origin("0").await, grpc_origin("14").await);
    let proxy = Proxy::start_with(
        "h2c = true\n",
        &format!(
            "[pools.blue]\nbackends = [\"{good}\"]\nprotocol = \"h2\"\n\
             [pools.green]\nbackends = [\"{bad}\"]\nprotocol = \"h2\"\n\
             [split]\nblue = 100\n[health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nmin_requests = 10\n"
        ),
    )
    .await;
    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    // Every call is HTTP 200; green's say UNAVAILABLE. Bounded: at most
    // 400 calls, until the guard moves traffic back.
    let mut rolled_back = false;
    for _ in 0..400 {
        if proxy.ctl("status").await["split"]["blue"] == 100.0 {
            rolled_back = true;
            break;
        }
        assert_eq!(call(proxy.listen, "/call").await.0, 200);
    }
    assert!(rolled_back, "no rollback:\n{}", proxy.log());
    let history = proxy.ctl("history 1").await;
    let reason = history["history"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error_rate of pool green"), "{history}");
}
