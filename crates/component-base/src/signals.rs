//! Turns SIGTERM/SIGINT into graceful shutdown.
//!
//! The first signal cancels the returned token, which every long-running task watches to drain
//! and stop; a second signal means the operator is done waiting, and exits the process at once
//! with the shell's conventional status (128 + signal number: 130 for SIGINT, 143 for SIGTERM).

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit status after a second SIGINT.
pub const SIGINT_EXIT_CODE: i32 = 130;
/// Exit status after a second SIGTERM.
pub const SIGTERM_EXIT_CODE: i32 = 143;

/// Returns a token cancelled by the first SIGTERM or SIGINT; a second one exits the process.
///
/// The handlers are registered before this returns, so no signal that arrives afterwards is
/// missed. Must be called from within a Tokio runtime.
///
/// # Panics
/// If the signal handlers cannot be registered (no runtime, or the OS refuses), which only
/// happens at startup.
pub fn shutdown_token() -> CancellationToken {
    let mut term = signal(SignalKind::terminate()).expect("registering SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("registering SIGINT handler");
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let (name, code) = tokio::select! {
                _ = term.recv() => ("SIGTERM", SIGTERM_EXIT_CODE),
                _ = int.recv() => ("SIGINT", SIGINT_EXIT_CODE),
            };
            received += 1;
            if received == 1 {
                tracing::info!(
                    signal = name,
                    "shutting down gracefully; send again to exit now"
                );
                cancel.cancel();
            } else {
                tracing::warn!(signal = name, "second signal, exiting immediately");
                std::process::exit(code);
            }
        }
    });
    token
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    const CHILD_ENV: &str = "COMPONENT_BASE_SIGNALS_CHILD";

    /// Runs in a child process (re-executing this test binary), since a second signal ends
    /// the whole process. Does nothing when run directly.
    #[test]
    fn signal_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let token = shutdown_token();
            println!("READY");
            token.cancelled().await;
            println!("DRAINING");
            // Stands in for a slow drain; only the second signal ends it.
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            println!("DRAINED");
        });
    }

    fn run_child(signal: &str) -> Option<i32> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "signals::tests::signal_child", "--nocapture"])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut wait_for = |want: &str| {
            for line in lines.by_ref() {
                if line.unwrap().trim() == want {
                    return;
                }
            }
            panic!("child exited before printing {want}");
        };
        let kill = || {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap();
            assert!(status.success());
        };
        wait_for("READY");
        kill();
        wait_for("DRAINING");
        kill();
        let status = child.wait().unwrap();
        status.code()
    }

    #[test]
    fn first_signal_cancels_token_second_exits_with_shell_status() {
        assert_eq!(run_child("TERM"), Some(SIGTERM_EXIT_CODE));
        assert_eq!(run_child("INT"), Some(SIGINT_EXIT_CODE));
    }
}
