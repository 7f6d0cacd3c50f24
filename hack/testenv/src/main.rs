//! `roster-testenv DIR CRDS.yaml`: starts the test control plane under DIR with the CRDs
//! installed, writes DIR/kubeconfig, and keeps running until SIGINT or SIGTERM, when it stops
//! every process. Used by `hack/demo.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

use roster_testenv::ControlPlane;
use tokio::signal::unix::{SignalKind, signal};

// Current-thread: the control plane's processes die with the thread that started them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: roster-testenv DIR CRDS.yaml");
        return ExitCode::from(2);
    };
    let Some(crds) = args.next().map(PathBuf::from) else {
        eprintln!("usage: roster-testenv DIR CRDS.yaml");
        return ExitCode::from(2);
    };
    match run(dir, crds).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roster-testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: PathBuf, crds: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let plane = ControlPlane::start(&dir, &std::fs::read_to_string(&crds)?).await?;
    std::fs::write(dir.join("ready"), plane.server())?;
    println!("control plane ready at {}; kubeconfig: {}", plane.server(), plane.kubeconfig().display());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(plane);
    let _ = std::fs::remove_file(dir.join("ready"));
    Ok(())
}
