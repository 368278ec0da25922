//! The admin line parser (`protocol::Command::parse`), which reads every
//! line a client writes to the admin socket (and `ctl`'s arguments).
//!
//! Properties: a refused line gets a message; an accepted command's text
//! form (`Display`, what the audit log records) parses back to the same
//! command, and that text is stable (printing it again gives the same).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::protocol::Command;

fuzz_target!(|bytes: &[u8]| {
    let Ok(line) = std::str::from_utf8(bytes) else {
        return;
    };
    match Command::parse(line) {
        Ok(command) => {
            let text = command.to_string();
            let again = Command::parse(&text)
                .unwrap_or_else(|e| panic!("{text:?} (from {line:?}) does not parse: {e}"));
            assert_eq!(again, command, "{text:?} parses to another command");
            assert_eq!(again.to_string(), text, "the text form is not stable");
        }
        Err(e) => assert!(!e.0.is_empty(), "{line:?} refused without a message"),
    }
});
