//! The TOML config (`Settings::from_toml`) on arbitrary text: never a
//! panic; no error quotes more than [`MAX_ECHO`] bytes of the file in one
//! piece (unknown field names, plan names and URLs were quoted whole); and
//! no secret in anything it prints.
//!
//! Each input is read twice: as it is, and after a first line that puts a
//! password into a URL, in the field meant for it (`redis_url`: userinfo,
//! `?pass=`, `?password=`, a Unix socket; `upstream` with credentials) or
//! in a field where it does not belong (a seed list given to
//! `redis_cluster`, a URL given to `max_connections`). Whatever follows
//! that line, neither the error (`Display`, `Debug`) nor the settings'
//! `Debug` may show the password. The first line is complete, so nothing
//! after it can make it part of another value.

#![no_main]

use std::collections::HashSet;

use cloro_config::{ConfigError, Flags, Settings};
use libfuzzer_sys::fuzz_target;

/// A password no input is likely to hold by chance; inputs that do hold it
/// are read only as they are.
const SECRET: &str = "Hunter2Secret";

/// The lines that put [`SECRET`] into a config.
const SECRET_LINES: [&str; 8] = [
    "redis_url = \"redis://:Hunter2Secret@cache:6379/0\"",
    "redis_url = \"redis://user:Hunter2Secret@cache:6379\"",
    "redis_url = \"redis://cache:6379?pass=Hunter2Secret\"",
    "redis_url = \"rediss://cache:6379/?password=Hunter2Secret\"",
    "redis_url = \"redis+unix:///run/redis.sock?pass=Hunter2Secret\"",
    "upstream = \"http://user:Hunter2Secret@api:8080\"",
    "redis_cluster = \"redis://:Hunter2Secret@a:7000,redis://b:7000\"",
    "max_connections = \"redis://:Hunter2Secret@cache:6379\"",
];

/// The most of the input an error may quote in one piece. config.rs cuts
/// what it quotes of the file at 64 bytes; the rest is slack for the
/// quotes and the `…` around a cut excerpt.
const MAX_ECHO: usize = 80;

fuzz_target!(|text: &str| {
    let _ = printed(Settings::from_toml(Flags::default(), text), text);
    if text.contains(SECRET) {
        return;
    }
    let line = SECRET_LINES[text.len() % SECRET_LINES.len()];
    let config = format!("{line}\n{text}");
    let shown = printed(Settings::from_toml(Flags::default(), &config), &config);
    assert!(
        !shown.contains(SECRET),
        "the password of {line:?} is shown: {shown}"
    );
});

/// Everything the server could log of an outcome; an error is checked on
/// the way for what it quotes of `text`.
fn printed(outcome: Result<Settings, ConfigError>, text: &str) -> String {
    match outcome {
        Ok(settings) => format!("{settings:?}"),
        Err(error) => {
            let message = error.to_string();
            if let Some(echo) = longest_echo(&message, text) {
                panic!(
                    "the error quotes {} bytes of the input ({:?}): {message}",
                    echo.len(),
                    String::from_utf8_lossy(echo)
                );
            }
            format!("{message}\n{error:?}")
        }
    }
}

/// Where `message` holds a run of more than [`MAX_ECHO`] bytes of `text`,
/// that run, grown as far as it goes.
fn longest_echo<'m>(message: &'m str, text: &str) -> Option<&'m [u8]> {
    let windows: HashSet<&[u8]> = text.as_bytes().windows(MAX_ECHO + 1).collect();
    let bytes = message.as_bytes();
    let start = (0..bytes.len().saturating_sub(MAX_ECHO))
        .find(|&at| windows.contains(&bytes[at..=at + MAX_ECHO]))?;
    let in_text = |run: &[u8]| text.as_bytes().windows(run.len()).any(|w| w == run);
    let mut end = start + MAX_ECHO + 1;
    while end < bytes.len() && in_text(&bytes[start..=end]) {
        end += 1;
    }
    Some(&bytes[start..end])
}
