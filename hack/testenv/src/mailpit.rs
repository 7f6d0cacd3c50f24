//! Mailpit, a real SMTP server whose HTTP API shows what was delivered, on free loopback
//! ports.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::{Result, free_ports, tool_path};

/// How long Mailpit gets to open its ports.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How often its ports are tried while it starts.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running Mailpit. Dropping it stops it.
pub struct Mailpit {
    process: Process,
    /// Its SMTP port on 127.0.0.1 (plain, no authentication).
    pub smtp_port: u16,
    /// Base URL of its HTTP API, e.g. `http://127.0.0.1:PORT`.
    pub api_url: String,
}

impl Mailpit {
    /// Starts Mailpit with its data and log under `dir`; `chaos` enables its chaos API (to
    /// make SMTP fail on purpose). Returns once both ports accept connections. It keeps its
    /// newest 500 messages.
    pub async fn start(dir: &Path, name: &str, chaos: bool) -> Result<Self> {
        Self::start_keeping(dir, name, chaos, 500).await
    }

    /// Starts Mailpit like [`Mailpit::start`], keeping its newest `max` messages (a
    /// benchmark counts thousands).
    pub async fn start_keeping(dir: &Path, name: &str, chaos: bool, max: usize) -> Result<Self> {
        let program = tool_path("mailpit")?;
        std::fs::create_dir_all(dir).map_err(crate::io(format!("creating {}", dir.display())))?;
        let [smtp_port, http_port] = free_ports()?;
        let mut args = vec![
            format!("--smtp=127.0.0.1:{smtp_port}"),
            format!("--listen=127.0.0.1:{http_port}"),
            format!("--database={}", dir.join(format!("{name}.db")).display()),
            "--quiet".to_owned(),
            format!("--max={max}"),
            // Any login is accepted (and none): roster's SMTP credentials can be exercised.
            "--smtp-auth-accept-any".to_owned(),
            "--smtp-auth-allow-insecure".to_owned(),
        ];
        if chaos {
            args.push("--enable-chaos".to_owned());
        }
        let mut process = Process::spawn(name, &program, &args, &[], dir)?;
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            process.check_running()?;
            let smtp = tokio::net::TcpStream::connect(("127.0.0.1", smtp_port)).await.is_ok();
            let http = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.is_ok();
            if smtp && http {
                break;
            }
            if Instant::now() > deadline {
                return Err(process.not_ready(format!("ports not open within {STARTUP_DEADLINE:?}")));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(Self { process, smtp_port, api_url: format!("http://127.0.0.1:{http_port}") })
    }

    /// Stops Mailpit, as an SMTP outage would.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
