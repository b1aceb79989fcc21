//! A private `chromedriver` on a free loopback port, driving Debian's
//! headless Chromium, for the dashboard's browser tests. Each driver gets
//! its own profile directory, removed when the handle drops, and the
//! process is killed then too: a test never leaves a browser behind, and
//! never talks to one it did not start.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::find_on_path;

const INSTALL: &str = "install Chromium and its WebDriver: `apt-get install chromium chromium-driver` \
     (Debian); the dashboard's browser tests never skip";

/// How long chromedriver may take to answer its status endpoint.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `chromedriver`.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts `chromedriver` on a free loopback port.
    ///
    /// # Panics
    /// When `chromedriver` or `chromium` is not on `PATH` (the message says
    /// how to install them), or the driver does not answer in time.
    pub fn start() -> Self {
        let driver = find_on_path("chromedriver")
            .unwrap_or_else(|| panic!("chromedriver not found on PATH: {INSTALL}"));
        let chromium = find_on_path("chromium")
            .unwrap_or_else(|| panic!("chromium not found on PATH: {INSTALL}"));
        let profile = tempfile::Builder::new()
            .prefix("cloro-chromium-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a Chromium profile directory: {error}"));
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", driver.display()));
        let mut started = ChromeDriver {
            child,
            port,
            chromium,
            profile,
        };
        started.wait_ready();
        started
    }

    /// `http://127.0.0.1:PORT`: the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The capabilities of a headless Chromium session: the machine's
    /// Chromium, no sandbox (tests may run as root), nothing that reaches
    /// out to the network, this driver's own profile.
    pub fn capabilities_json(&self, width: u32, height: u32) -> String {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let quoted: Vec<String> = args.iter().map(|arg| format!("{arg:?}")).collect();
        format!(
            r#"{{"browserName":"chrome","goog:chromeOptions":{{"binary":{:?},"args":[{}]}}}}"#,
            self.chromium.display().to_string(),
            quoted.join(",")
        )
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited at start ({status}); {INSTALL}");
            }
            if self.status_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "chromedriver did not answer on port {} within {START_TIMEOUT:?}",
            self.port
        );
    }

    fn status_ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"ready\":true") || answer.contains("\"ready\": true")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // chromedriver ends the browsers of its sessions when it goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|error| panic!("cannot bind a loopback port: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("cannot read a bound port: {error}"))
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_how_to_install() {
        assert!(INSTALL.contains("apt-get install chromium chromium-driver"));
    }
}
