//! The host process runtime, driven through `Arc<dyn Runtime>` as an embedder would.
#![cfg(unix)]

use std::{
    fs,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use locald_core::{
    Capability, Command, ContainerSpec, Error, ExitStatus, Runtime, Signal, Stdin, Stdio,
};
use locald_runtime::ProcessRuntime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn runtime() -> Arc<dyn Runtime> {
    Arc::new(ProcessRuntime::new())
}

fn sh(script: &str) -> Command {
    Command::new("sh").args(["-c", script])
}

/// True once `pid` no longer runs (gone, or a zombie waiting for its reaper).
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            after_comm.trim_start().starts_with(['Z', 'X'])
        }
    }
}

/// Waits (up to a generous bound, not a timing assertion) for `pid` to die.
async fn assert_dies(pid: u32) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !is_dead(pid) {
        assert!(Instant::now() < give_up, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &Path) -> u32 {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        assert!(
            Instant::now() < give_up,
            "no pid written to {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn captures_output_and_exit_code() {
    let out = runtime()
        .run_command(sh("echo out; echo err >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Exited(7));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn null_and_captured_streams() {
    let out = runtime()
        .run_command(sh("echo out; echo err >&2").stdout(Stdio::Null))
        .await
        .unwrap();
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn environment_set_remove_and_clear() {
    std::env::set_var("LOCALD_TEST_INHERITED", "yes");
    let rt = runtime();
    let out = rt
        .run_command(sh("echo \"$LOCALD_TEST_INHERITED/$EXTRA\"").env("EXTRA", "x"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"yes/x\n");

    let out = rt
        .run_command(sh("echo \"[$LOCALD_TEST_INHERITED]\"").env_remove("LOCALD_TEST_INHERITED"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"[]\n");

    let out = rt
        .run_command(Command::new("/usr/bin/env").env_clear().env("ONLY", "1"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ONLY=1\n");
}

#[tokio::test]
async fn working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let out = runtime()
        .run_command(Command::new("pwd").current_dir(&canonical))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        canonical.to_str().unwrap()
    );
}

#[tokio::test]
async fn missing_working_directory_is_named() {
    let err = runtime()
        .run_command(Command::new("true").current_dir("/no/such/dir"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WorkingDirNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "working directory not found: /no/such/dir");
}

#[tokio::test]
async fn missing_program_is_named() {
    let rt = runtime();
    let err = rt
        .run_command(Command::new("locald-no-such-program"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "program not found: locald-no-such-program");
    let err = rt
        .spawn(Command::new("/no/such/program"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProgramNotFound { ref program } if program == "/no/such/program"));
}

#[tokio::test]
async fn non_executable_program_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let err = runtime()
        .run_command(Command::new(script.to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn stdin_bytes_round_trip() {
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = runtime()
        .run_command(Command::new("cat").stdin_bytes(data.clone()))
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data);
}

#[tokio::test]
async fn stdin_bytes_not_read_is_fine() {
    let out = runtime()
        .run_command(Command::new("true").stdin_bytes(vec![b'x'; 1 << 20]))
        .await
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn exit_by_signal_is_reported_as_such() {
    let out = runtime().run_command(sh("kill -TERM $$")).await.unwrap();
    assert_eq!(out.status, ExitStatus::Signaled(Signal::TERM));
    assert_eq!(out.status.shell_code(), 143);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let err = runtime()
        .run_command(sh(&script).timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.to_string(), "sh timed out after 500ms and was killed");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the timeout did not fire"
    );
    assert_dies(read_pid(&pidfile)).await;
}

#[tokio::test]
async fn timeout_bounds_a_grandchild_holding_the_output_pipe() {
    // The leader exits at once; the grandchild keeps stdout open. Without a timeout
    // this would wait for the grandchild, as std does; with one it is killed.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}", pidfile.display());
    let started = Instant::now();
    let err = runtime()
        .run_command(sh(&script).timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_dies(read_pid(&pidfile)).await;
}

#[tokio::test]
async fn spawn_streams_output_as_it_comes() {
    let mut p = runtime()
        .spawn(
            sh("echo one; read line; echo \"got $line\"")
                .stdin(Stdin::Piped)
                .stdout(Stdio::Piped),
        )
        .await
        .unwrap();
    assert!(p.id().is_some());
    let mut stdin = p.take_stdin().unwrap();
    let mut lines = BufReader::new(p.take_stdout().unwrap()).lines();
    // The first line arrives while the process still waits for input.
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("one"));
    stdin.write_all(b"two\n").await.unwrap();
    drop(stdin);
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("got two"));
    assert_eq!(lines.next_line().await.unwrap(), None);
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));
    // Waiting again returns the same status.
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));
}

#[tokio::test]
async fn spawned_output_is_collected() {
    let p = runtime()
        .spawn(sh("echo a; echo b >&2; exit 3"))
        .await
        .unwrap();
    let out = p.output().await.unwrap();
    assert_eq!(out.stdout, b"a\n");
    assert_eq!(out.stderr, b"b\n");
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn kill_sends_the_signal_to_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let mut p = runtime().spawn(sh(&script)).await.unwrap();
    let grandchild = read_pid(&pidfile);
    p.kill(Signal::TERM).await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(Signal::TERM));
    assert_dies(grandchild).await;
    // Signalling a process that has ended is not an error.
    p.kill(Signal::KILL).await.unwrap();
}

#[tokio::test]
async fn wait_is_cancel_safe_beside_kill() {
    let mut p = runtime()
        .spawn(Command::new("sleep").arg("60"))
        .await
        .unwrap();
    let status = loop {
        tokio::select! {
            status = p.wait() => break status.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                p.kill(Signal::INT).await.unwrap();
            }
        }
    };
    assert_eq!(status, ExitStatus::Signaled(Signal::INT));
}

#[tokio::test]
async fn dropping_the_handle_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let p = runtime().spawn(sh(&script)).await.unwrap();
    let leader = p.id().unwrap();
    let grandchild = read_pid(&pidfile);
    drop(p);
    assert_dies(grandchild).await;
    assert_dies(leader).await;
}

#[tokio::test]
async fn spawn_timeout_ends_wait() {
    let mut p = runtime()
        .spawn(
            Command::new("sleep")
                .arg("60")
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let pid = p.id().unwrap();
    let err = p.wait().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(matches!(p.wait().await, Err(Error::Timeout { .. })));
    assert_dies(pid).await;
}

#[tokio::test]
async fn piped_stdout_can_be_read_to_end() {
    let mut p = runtime()
        .spawn(sh("seq 1 10000").stdout(Stdio::Piped))
        .await
        .unwrap();
    let mut s = String::new();
    p.take_stdout()
        .unwrap()
        .read_to_string(&mut s)
        .await
        .unwrap();
    assert_eq!(s.lines().count(), 10000);
    assert!(p.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_commands_at_once() {
    let rt = runtime();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.run_command(sh(&format!("echo {i}; exit {}", i % 5)))
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
        assert_eq!(out.status.code(), Some((i % 5) as i32));
    }
}

#[tokio::test]
async fn invalid_commands_are_rejected_before_running() {
    let rt = runtime();
    let err = rt.run_command(Command::new("")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid command \"\": the program name is empty"
    );
    let err = rt
        .run_command(Command::new("env").env("A=B", "1"))
        .await
        .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("invalid environment variable name"));
}

#[tokio::test]
async fn containers_are_unsupported_by_this_runtime() {
    let rt = runtime();
    let info = rt.info();
    assert_eq!(info.name, "process");
    assert!(info.supports(Capability::Commands));
    assert!(!info.supports(Capability::Containers));
    let spec = ContainerSpec::builder("busybox").build().unwrap();
    let err = rt.run_container(spec).await.unwrap_err();
    assert!(err.is_unsupported());
    assert!(
        err.to_string()
            .starts_with("running containers is not supported by the process runtime on"),
        "{err}"
    );
    assert!(rt.list_containers(true).await.unwrap_err().is_unsupported());
    assert!(rt
        .exec("x", Command::new("true"))
        .await
        .unwrap_err()
        .is_unsupported());
}
