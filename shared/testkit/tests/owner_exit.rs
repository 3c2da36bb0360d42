//! No DynamoDB Local outlives the test process that started it, however that process ends.
//!
//! The test binary runs itself as the owner (test `owner`, which does nothing unless
//! `TOLLGATE_OWNER_MODE` is set): the owner starts DynamoDB Local through the harness, says
//! `READY`, then ends as the mode says or as the test ends it; the test counts the JVMs that
//! carry the owner's unique tag on their command line before and after.
#![cfg(target_os = "linux")]

use std::io::BufRead;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use tollgate_testkit::dynamo;
use tollgate_testkit::process::{Ending, run_owner};

const MODE_ENV: &str = "TOLLGATE_OWNER_MODE";

fn answers(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    TcpStream::connect_timeout(
        &addr.parse().expect("socket address"),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// The owner, when run by [`dynamodb_local_dies_with_its_owner`]; a no-op otherwise.
#[test]
fn owner() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let endpoint = if mode == "thread" {
        // Started from a thread that ends at once: the JVM must not die with that thread
        // (PR_SET_PDEATHSIG fires when the forking *thread* ends).
        std::thread::spawn(|| dynamo::endpoint().to_string())
            .join()
            .expect("starter thread")
    } else {
        dynamo::endpoint().to_string()
    };
    println!("READY {endpoint}");
    match mode.as_str() {
        "wait" => std::thread::sleep(Duration::from_secs(120)),
        _ => {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            assert!(
                answers(&endpoint),
                "DynamoDB Local stopped while its owner still runs"
            );
            if mode == "panic" {
                panic!("the owner panics on purpose");
            }
        }
    }
}

#[test]
fn dynamodb_local_dies_with_its_owner() {
    if std::env::var_os(MODE_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let cases: [(&str, Ending, Option<i32>); 7] = [
        ("exit", Ending::Itself, Some(0)),
        ("thread", Ending::Itself, Some(0)),
        ("panic", Ending::Itself, Some(101)),
        ("wait", Ending::Signal(libc::SIGTERM), None),
        ("wait", Ending::GroupSignal(libc::SIGINT), None),
        ("wait", Ending::GroupSignal(libc::SIGINT), None),
        ("wait", Ending::Signal(libc::SIGKILL), None),
    ];
    let mut failures = Vec::new();
    for (mode, ending, code) in cases {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "owner", "--nocapture", "--test-threads=1"])
            .env(MODE_ENV, mode);
        let report = run_owner(cmd, "READY", Duration::from_secs(120), ending)
            .unwrap_or_else(|e| panic!("{mode} / {ending:?}: {e}"));
        eprintln!("{mode} / {ending:?}: {report:?}");
        if report.alive_when_ready != 1 {
            failures.push(format!(
                "{mode} / {ending:?}: {} tagged JVMs while the owner ran, expected 1",
                report.alive_when_ready
            ));
        }
        if code.is_some() && report.status.code() != code {
            failures.push(format!(
                "{mode} / {ending:?}: owner exited {:?}, expected code {code:?}",
                report.status
            ));
        }
        if !report.left.is_empty() {
            failures.push(format!(
                "{mode} / {ending:?}: JVMs left after the owner exited: {:?}",
                report.left
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
