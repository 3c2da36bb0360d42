//! No DynamoDB Local outlives `tollgate local` or a test that runs the local stack, however
//! they end: Ctrl-C in a terminal (SIGINT to the whole process group), SIGTERM, SIGKILL, a
//! normal return, a panic. Each owner's JVM carries the owner's unique tag on its command line;
//! the test counts the tagged JVMs before and after.
#![cfg(target_os = "linux")]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tollgate_local::{LocalStack, StackOptions};
use tollgate_testkit::process::{Ending, OwnerReport, run_owner};

const MODE_ENV: &str = "TOLLGATE_OWNER_MODE";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The in-process owner, when run by [`the_local_stack_leaves_no_jvm`]; a no-op otherwise.
#[test]
fn owner() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stack = runtime.block_on(async {
        let mut opts = StackOptions::new(repo());
        opts.port = 0;
        LocalStack::start(opts).await.expect("local stack starts")
    });
    println!("READY {}", stack.info.base_url);
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if mode == "panic" {
        panic!("the owner panics on purpose");
    }
    drop(stack);
}

fn check(what: &str, report: &OwnerReport, failures: &mut Vec<String>) {
    eprintln!("{what}: {report:?}");
    if report.alive_when_ready != 1 {
        failures.push(format!(
            "{what}: {} tagged JVMs while the owner ran, expected 1",
            report.alive_when_ready
        ));
    }
    if !report.left.is_empty() {
        failures.push(format!(
            "{what}: JVMs left after the owner exited: {:?}",
            report.left
        ));
    }
}

#[test]
fn the_local_stack_leaves_no_jvm() {
    if std::env::var_os(MODE_ENV).is_some() {
        return;
    }
    let ready_within = Duration::from_secs(180);
    let mut failures = Vec::new();

    // `tollgate local` as a person runs it, stopped as a person stops it.
    let work = std::env::temp_dir().join(format!("tollgate-owner-exit-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let endings = [
        Ending::GroupSignal(libc::SIGINT),
        Ending::GroupSignal(libc::SIGINT),
        Ending::Signal(libc::SIGTERM),
        Ending::Signal(libc::SIGKILL),
    ];
    for ending in endings {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["local", "--port", "0", "--info-file"])
            .arg(work.join("local.json"))
            .current_dir(repo());
        let report = run_owner(
            cmd,
            "serving; Ctrl-C stops everything",
            ready_within,
            ending,
        )
        .unwrap_or_else(|e| panic!("tollgate local / {ending:?}: {e}"));
        check(
            &format!("tollgate local / {ending:?}"),
            &report,
            &mut failures,
        );
    }
    let _ = std::fs::remove_dir_all(&work);

    // A test process running the stack in-process returns or panics.
    let exe = std::env::current_exe().expect("test binary");
    for (mode, code) in [("exit", 0), ("panic", 101)] {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "owner", "--nocapture", "--test-threads=1"])
            .env(MODE_ENV, mode);
        let report = run_owner(cmd, "READY", ready_within, Ending::Itself)
            .unwrap_or_else(|e| panic!("in-process stack / {mode}: {e}"));
        if report.status.code() != Some(code) {
            failures.push(format!(
                "in-process stack / {mode}: exited {:?}, expected code {code}",
                report.status
            ));
        }
        check(
            &format!("in-process stack / {mode}"),
            &report,
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
