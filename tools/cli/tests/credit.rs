//! `tollgate credit adjust`, run as an operator runs it, against the local stack's real route.

use std::process::Output;
use tollgate_local::{LocalStack, StackOptions};

async fn adjust(info: &std::path::Path, args: &[&str]) -> Output {
    let mut all: Vec<String> = [
        "credit",
        "adjust",
        "--consumer",
        "ivy",
        "--reason",
        "goodwill",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--local-info".to_string(), info.display().to_string()]);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(&all)
            .env_remove("TOLLGATE_API_URL")
            .env_remove("TOLLGATE_PORTAL_SECRET")
            .output()
            .expect("tollgate runs")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_adjust_applies_once_per_key_and_refuses_another_amount_under_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    opts.start_time = Some(1_795_996_800); // 2026-11-30T00:00:00Z
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("local.json");
    stack.write_info(&info).unwrap();

    let out = adjust(&info, &["--amount", "700", "--idempotency-key", "t-1"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "ivy: applied 700 (asked 700), balance 700\n");
    let again = adjust(&info, &["--amount", "700", "--idempotency-key", "t-1"]).await;
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "ivy: already applied: 700 (asked 700), balance 700\n"
    );
    let take = adjust(&info, &["--amount=-900", "--idempotency-key", "t-2"]).await;
    assert!(
        take.status.success(),
        "{}",
        String::from_utf8_lossy(&take.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&take.stdout),
        "ivy: applied -700 (asked -900), balance 0\n",
        "never below the floor (0)"
    );
    let reused = adjust(&info, &["--amount", "5", "--idempotency-key", "t-1"]).await;
    assert_eq!(reused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("HTTP 409"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
}
