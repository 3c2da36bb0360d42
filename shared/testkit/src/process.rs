//! Helper processes (DynamoDB Local, chromedriver) that die with the process that started them,
//! however it ends: normal exit, panic, SIGTERM, SIGINT to the process group (Ctrl-C), SIGKILL.
//!
//! On Linux the child asks the kernel for `SIGKILL` when its parent dies
//! (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec). The kernel's "parent" is the
//! *thread* that forked, not the process (prctl(2): "the parent-death signal is sent upon
//! subsequent termination of the parent thread"), so a child spawned from a `#[test]` thread or
//! a tokio `spawn_blocking` worker would be killed when that thread ends, while the process
//! still needs it. Every child is therefore forked by one dedicated thread that never ends
//! ([`spawn_owned`] hands the `Command` to it); that thread dies only with the process.
//!
//! The child also stays in its owner's process group, so a Ctrl-C in a terminal reaches it as
//! it reaches the owner. No shell sits in between: a `sh -c "java … &"` wrapper dies on the
//! signal while its background job (SIGINT ignored, as POSIX prescribes for asynchronous
//! commands of a non-interactive shell) survives, reparented to init.
//!
//! Other Unixes have no parent-death signal; there the child stops with the process group's
//! signal or lives on after a SIGKILL of its owner.
//!
//! Every child can carry a marker on its command line (see [`owner_marker`]) so tests can
//! count what is left of their own children without being disturbed by other processes.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

/// Set this environment variable to a unique value and the JVM of DynamoDB Local started by
/// this process carries `-Dtollgate.tag=<value>` on its command line, so a test can find it in
/// `/proc/*/cmdline` whatever its parent is by then.
pub const TAG_ENV: &str = "TOLLGATE_CHILD_TAG";

/// Command-line arguments naming the owner of a Java child: `-Dtollgate.owner=<pid>` and, when
/// [`TAG_ENV`] is set, `-Dtollgate.tag=<tag>`. Java ignores system properties nobody reads.
pub fn owner_marker() -> Vec<String> {
    let mut args = vec![format!("-Dtollgate.owner={}", std::process::id())];
    if let Ok(tag) = std::env::var(TAG_ENV)
        && !tag.is_empty()
    {
        args.push(format!("-Dtollgate.tag={tag}"));
    }
    args
}

type Job = (Command, Sender<io::Result<Child>>);

/// The sender to the forking thread, started on first use.
fn spawner() -> &'static Mutex<Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("tollgate-child-owner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread) never ends: the
                // parent-death signal of every child fires only when the process goes.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd));
                }
            })
            .expect("start the thread that owns child processes");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it dies with this process (see the module docs): forked by a thread
/// that lives as long as the process, with `SIGKILL` as its parent-death signal on Linux.
///
/// Errors: the spawn's own (`cmd` not found, …).
pub fn spawn_owned(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = channel();
    spawner()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the child-owner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the child-owner thread did not answer"))?
}

#[cfg(target_os = "linux")]
fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The owner died between fork and prctl: the signal will never come, so do not
            // start at all.
            if libc::getppid() != parent {
                return Err(io::Error::other("owner exited before the child started"));
            }
            Ok(())
        })
    };
    cmd.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    cmd.spawn()
}

/// The pids of live processes whose command line has the argument `-Dtollgate.tag=<tag>`
/// (read from `/proc/*/cmdline`; a zombie has an empty command line and is not counted).
/// Linux only: tests use it to count the helper processes their owners left behind.
#[cfg(target_os = "linux")]
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let marker = format!("-Dtollgate.tag={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == marker.as_bytes())
            })
        })
        .collect()
}

/// How [`run_owner`] ends an owner process once it is ready.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// Writes a line to its stdin; the owner then ends by itself (returns, panics, ...).
    Itself,
    /// Sends this signal to the owner's pid only.
    Signal(i32),
    /// Sends this signal to the owner's whole process group, as a terminal's Ctrl-C does.
    GroupSignal(i32),
}

/// What [`run_owner`] saw.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct OwnerReport {
    /// Tagged helper processes alive when the owner said it was ready.
    pub alive_when_ready: usize,
    /// The owner's exit status.
    pub status: std::process::ExitStatus,
    /// Tagged helper processes still alive 10 s after the owner exited (they are killed
    /// after being counted, so a failing run leaves nothing behind either).
    pub left: Vec<u32>,
}

/// Runs `cmd` as an owner of helper processes and counts the helpers it leaves: the owner
/// gets a fresh [`TAG_ENV`] (its helpers carry it on their command line), no
/// `TOLLGATE_TEST_DYNAMODB_ENDPOINT` (so it starts its own DynamoDB Local), its own process
/// group (so a group signal reaches it and its children, not the test), a piped stdin and
/// stdout. Once a stdout line contains `ready`, the tagged processes are counted, the owner
/// is ended as `ending` says and waited for (at most 60 s, then killed), and the tagged
/// processes still alive 10 s later are reported.
///
/// Errors: the owner could not start, exited or stayed silent for `ready_within` before
/// saying `ready`, or did not exit after being ended.
#[cfg(target_os = "linux")]
pub fn run_owner(
    mut cmd: Command,
    ready: &str,
    ready_within: std::time::Duration,
    ending: Ending,
) -> Result<OwnerReport, String> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let tag = uuid::Uuid::new_v4().simple().to_string();
    cmd.env(TAG_ENV, &tag)
        .env_remove(crate::dynamo::ENDPOINT_ENV)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut owner = cmd
        .spawn()
        .map_err(|e| format!("owner did not start: {e}"))?;
    let pid = owner.id() as i32;
    let stdout = owner.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + ready_within;
    let mut seen = Vec::new();
    let cleanup = |owner: &mut Child| {
        let _ = owner.kill();
        let _ = owner.wait();
        for p in tagged_processes(&tag) {
            // SAFETY: kill(2) with a pid we found by our own unique tag.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                cleanup(&mut owner);
                return Err(format!(
                    "owner did not say {ready:?} within {ready_within:?}; its stdout:\n{}",
                    seen.join("\n")
                ));
            }
        }
    }
    let alive_when_ready = tagged_processes(&tag).len();
    match ending {
        Ending::Itself => {
            let mut stdin = owner.stdin.take().expect("piped stdin");
            let _ = writeln!(stdin, "go");
        }
        // SAFETY: kill(2) on the child we spawned (its pid, or its own process group).
        Ending::Signal(sig) => unsafe {
            libc::kill(pid, sig);
        },
        Ending::GroupSignal(sig) => unsafe {
            libc::kill(-pid, sig);
        },
    }
    let exit_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match owner.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < exit_deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                cleanup(&mut owner);
                return Err(format!("owner did not exit within 60 s after {ending:?}"));
            }
        }
    };
    let grace = Instant::now() + Duration::from_secs(10);
    let mut left = tagged_processes(&tag);
    while !left.is_empty() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(100));
        left = tagged_processes(&tag);
    }
    cleanup(&mut owner);
    Ok(OwnerReport {
        alive_when_ready,
        status,
        left,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The thread caveat: a child spawned from a thread that then ends keeps running.
    #[test]
    fn child_outlives_the_thread_that_asked_for_it() {
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            spawn_owned(cmd).expect("spawn sleep")
        })
        .join()
        .expect("thread");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the child died with the thread that asked for it"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}
