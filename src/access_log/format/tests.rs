use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{write, Entry, Line};
use crate::config::AccessLogFormat;
use crate::stats::FailureKind;

/// 2026-12-01T23:59:59.123Z
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_169_599_123)
}

fn entry<'a>(method: &'a [u8], target: &'a [u8]) -> Entry<'a> {
    Entry {
        client: Some([192, 0, 2, 7].into()),
        method,
        target,
        protocol: "HTTP/1.1",
        status: 200,
        bytes: 5,
        duration: Duration::from_micros(1_234),
        upstream: Some(Duration::from_micros(987)),
        pool: Some("blue"),
        backend: Some("127.0.0.1:9001"),
        why: "split",
        request_id: b"0123456789abcdef0123456789abcdef",
        referer: b"",
        user_agent: b"curl/8.5.0",
        failure: None,
    }
}

fn line(format: AccessLogFormat, e: &Entry) -> String {
    let mut line = Line::default();
    write(&mut line, format, e, at());
    String::from_utf8(line.get().expect("fits").to_vec()).expect("UTF-8")
}

#[test]
fn a_json_line_has_every_spec_field() {
    let text = line(AccessLogFormat::Json, &entry(b"GET", b"/thing?x=1"));
    assert_eq!(
        text,
        "{\"time\":\"2026-12-01T23:59:59.123Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\",\
         \"target\":\"/thing?x=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":5,\
         \"duration_ms\":1.234,\"upstream_ms\":0.987,\"pool\":\"blue\",\
         \"backend\":\"127.0.0.1:9001\",\"why\":\"split\",\
         \"request_id\":\"0123456789abcdef0123456789abcdef\"}\n"
    );
}

#[test]
fn hostile_bytes_in_method_and_target_stay_valid_json_and_round_trip() {
    let target: &[u8] = b"/a\"b\\c\nd\re\tf\x00g\x1f\x7fh\xff\xc3(\xe2\x82\xac}{";
    let method: &[u8] = b"G\"E\\T\x01";
    let mut e = entry(method, target);
    e.failure = Some(FailureKind::ConnectRefused);
    e.client = None;
    e.upstream = None;
    let text = line(AccessLogFormat::Json, &e);
    assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    // Valid UTF-8 (the euro sign) is kept; every other byte reads back as
    // the code point of its value.
    assert_eq!(
        value["target"],
        "/a\"b\\c\nd\re\tf\u{0}g\u{1f}\u{7f}h\u{ff}\u{c3}(\u{20ac}}{"
    );
    assert_eq!(value["method"], "G\"E\\T\u{1}");
    assert_eq!(value["upstream_failure"], "connect_refused");
    assert_eq!(value["client"], serde_json::Value::Null);
    assert_eq!(value["upstream_ms"], serde_json::Value::Null);
}

#[test]
fn a_huge_target_is_cut_and_the_line_still_fits() {
    let target = vec![0x01u8; 100_000];
    let text = line(AccessLogFormat::Json, &entry(b"GET", &target));
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        value["target"].as_str().map(str::len),
        Some(super::MAX_TARGET)
    );
}

#[test]
fn a_combined_line_is_the_nginx_format_plus_switchyards_fields() {
    let mut e = entry(b"GET", b"/x \"y\"\x1b");
    e.failure = Some(FailureKind::Reset);
    e.status = 502;
    assert_eq!(
        line(AccessLogFormat::Combined, &e),
        "192.0.2.7 - - [01/Dec/2026:23:59:59 +0000] \"GET /x \\x22y\\x22\\x1B HTTP/1.1\" 502 5 \
         \"-\" \"curl/8.5.0\" pool=blue backend=127.0.0.1:9001 duration_ms=1.234 \
         upstream_ms=0.987 why=split request_id=0123456789abcdef0123456789abcdef \
         upstream_failure=reset\n"
    );
}

#[test]
fn dates_are_right_across_leap_days_and_years() {
    for (millis, expected) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
    ] {
        let mut line = Line::default();
        super::rfc3339(&mut line, UNIX_EPOCH + Duration::from_millis(millis));
        assert_eq!(line.get(), Some(expected.as_bytes()), "{millis}");
    }
}
