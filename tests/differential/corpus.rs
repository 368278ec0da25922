//! The corpus format: plain text files of cases (`tests/http1_conformance/
//! corpus/*.txt`), read here.
//!
//! ```text
//! # a comment
//! case te-cl
//! about: TE.CL, the classic desync
//! send: POST / HTTP/1.1\r\nHost: x\r\n ... (escapes: \r \n \t \0 \\ \xHH)
//! send: ...more bytes (lines of one key are joined)
//! respond: HTTP/1.1 200 OK\r\n ... (the origin's answer; default: a 200)
//! expect: 400
//! forwarded: nothing | the exact bytes the origin must receive
//! forwarded.pingora: (optional) what pingora's path forwards instead
//! expect.pingora: (optional) pingora's outcome, where it is known to differ
//! ```
//!
//! The `.pingora` keys record documented differences of pingora's path
//! (it moves `Transfer-Encoding` last and drops chunk extensions and
//! trailers; it frames origin responses with its own lenient decoder).
//!
//! `expect` is the client's outcome on both paths, the responses it got in
//! order until the connection closed: a status per response (interim 1xx
//! included), `cut` for a response whose body ended early, `garbled` for
//! bytes that are no response, `hang` if the connection was still open
//! after the deadline, `none` for a close with no byte at all.

use std::path::Path;

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub about: String,
    pub send: Vec<u8>,
    pub respond: Option<Vec<u8>>,
    pub expect: String,
    /// `None`: nothing may reach the origin.
    pub forwarded: Option<Vec<u8>>,
    /// A documented difference of pingora's path, if any.
    pub forwarded_pingora: Option<Option<Vec<u8>>>,
    /// pingora's outcome where it is known to differ (response framing).
    pub expect_pingora: Option<String>,
    /// Where it is defined, for messages.
    pub source: String,
}

/// Turns the escapes of a corpus line into bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1).ok_or("a lone \\ at the end")?;
        i += 2;
        out.push(match next {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b'0' => 0,
            b'\\' => b'\\',
            b'x' => {
                let hex = text.get(i..i + 2).ok_or("\\x needs two hex digits")?;
                i += 2;
                u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        });
    }
    Ok(out)
}

fn forwarded(text: &str) -> Result<Option<Vec<u8>>, String> {
    if text.trim() == "nothing" {
        Ok(None)
    } else {
        unescape(text).map(Some)
    }
}

/// Every case of every `*.txt` file in `dir`, in file and line order.
pub fn load(dir: &Path) -> Vec<Case> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus dir {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("corpus file");
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        cases.extend(parse(&name, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(&case.name), "case {} defined twice", case.name);
    }
    cases
}

pub fn parse(file: &str, text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(Case {
                name: name.trim().to_string(),
                about: String::new(),
                send: Vec::new(),
                respond: None,
                expect: String::new(),
                forwarded: None,
                forwarded_pingora: None,
                expect_pingora: None,
                source: at,
            });
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| format!("{at}: a key before the first case"))?;
        let (key, value) = line
            .split_once(": ")
            .or_else(|| line.split_once(':'))
            .ok_or_else(|| format!("{at}: not `key: value`"))?;
        let err = |e: String| format!("{at}: {e}");
        match key {
            "about" => case.about = value.to_string(),
            "send" => case.send.extend(unescape(value).map_err(err)?),
            "respond" => case
                .respond
                .get_or_insert_with(Vec::new)
                .extend(unescape(value).map_err(err)?),
            "expect" => case.expect = value.trim().to_string(),
            "forwarded" => match (&mut case.forwarded, forwarded(value).map_err(err)?) {
                (Some(prior), Some(more)) => prior.extend(more),
                (slot, value) => *slot = value,
            },
            "forwarded.pingora" => {
                match (&mut case.forwarded_pingora, forwarded(value).map_err(err)?) {
                    (Some(Some(prior)), Some(more)) => prior.extend(more),
                    (slot, value) => *slot = Some(value),
                }
            }
            "expect.pingora" => case.expect_pingora = Some(value.trim().to_string()),
            other => return Err(format!("{at}: unknown key {other:?}")),
        }
    }
    for case in &cases {
        if case.send.is_empty() || case.expect.is_empty() {
            return Err(format!(
                "{}: case {} needs send and expect",
                case.source, case.name
            ));
        }
    }
    Ok(cases)
}

/// The reviewed allow-list: `case-name: reason`, one a line.
pub fn allow_list(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, reason) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("allow-list line without a reason: {l:?}"));
            assert!(
                !reason.trim().is_empty(),
                "allow-list entry {name} has no reason"
            );
            (name.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}
