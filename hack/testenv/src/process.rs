//! One child process of the test environment: started with a parent-death signal (so it
//! cannot outlive the harness, even one killed outright), its output in a log file, stopped
//! on drop.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result, io};

/// A running tool.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args` and extra environment `env`, writing its stdout and
    /// stderr to `<log_dir>/<name>.log`.
    ///
    /// Call from the thread that lives as long as the process should: the parent-death
    /// signal fires when the spawning thread ends.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        let mut command = if Path::new(SETPRIV).exists() {
            let mut c = Command::new(SETPRIV);
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
            c
        } else {
            Command::new(program)
        };
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", program.display())))?;
        Ok(Self { name: name.to_owned(), child, log })
    }

    /// The log file of this process.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Fails with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.not_ready(format!("exited with {status}"))),
            Err(e) => Err(self.not_ready(format!("cannot be waited on: {e}"))),
        }
    }

    /// An error saying this process is not ready, with the end of its log.
    pub fn not_ready(&self, reason: String) -> Error {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        Error::NotReady { name: self.name.clone(), reason, log: self.log.display().to_string(), tail }
    }

    /// Kills the process outright (SIGKILL), as a node failure or the OOM killer would, and
    /// reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (as the kubelet does when a pod is deleted) without waiting.
    pub fn terminate(&mut self) {
        let _ = self.signal("-TERM");
    }

    /// Sends `signal` (`-TERM`, `-STOP`, `-CONT`) with kill(1); whether it was delivered.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().is_ok_and(|s| s.success())
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still there after a grace period.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.terminate();
        if self.wait_timeout(Duration::from_secs(10)).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

const SETPRIV: &str = "/usr/bin/setpriv";
/// How often an exit is checked for while waiting on one.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
