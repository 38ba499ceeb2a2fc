//! The conformance suite: what every [`Runtime`] must do the same way, whether it
//! runs in process or behind a locald daemon.
//!
//! Instantiate it in a test file with [`conformance_suite!`] and a factory that makes a
//! fresh [`Subject`] for each case; each case becomes its own `#[tokio::test]`:
//!
//! ```ignore
//! async fn in_process() -> locald_conformance::Subject {
//!     locald_conformance::Subject::new(std::sync::Arc::new(ProcessRuntime::new()))
//! }
//! mod process { locald_conformance::conformance_suite!(super::in_process); }
//! ```
//!
//! Commands are checked everywhere. Container cases run where the runtime has the
//! [`Capability::Containers`] and a root filesystem with a `/bin/sh` is at hand:
//! `LOCALD_CONFORMANCE_ROOTFS` names one, else on Linux as root the suite uses the
//! shared busybox tree of `locald_runtime::testing`. Elsewhere they check that the
//! runtime says it cannot, with the same error, or print a loud SKIP.

use std::{any::Any, sync::Arc, time::Duration};

use locald_core::{
    Capability, Command, ContainerSpec, Error, ExitStatus, ImageRef, LogOptions, PullOptions,
    Runtime, Signal, Stdin, Stdio, TerminalSize,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A runtime under test, with whatever must live as long as it (a daemon, a temp dir).
pub struct Subject {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("runtime", &self.runtime)
            .finish()
    }
}

impl Subject {
    /// A runtime that needs nothing else alive.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Subject {
            runtime,
            _guard: Box::new(()),
        }
    }

    /// A runtime that works while `guard` lives.
    pub fn with_guard(runtime: Arc<dyn Runtime>, guard: impl Any + Send) -> Self {
        Subject {
            runtime,
            _guard: Box::new(guard),
        }
    }
}

/// Generates one `#[tokio::test]` per conformance case, each calling `$factory().await`
/// for its [`Subject`]. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@cases $factory;
            output_and_exit_code,
            exact_bytes_through_stdin_and_stdout,
            large_stdin_and_output,
            large_output_in_order_per_stream,
            killed_by_a_signal,
            run_command_timeout,
            spawn_timeout,
            missing_program,
            missing_working_directory,
            invalid_command,
            env_and_working_directory,
            null_and_piped_streams,
            spawn_streams_both_ways,
            stdin_end_of_file,
            kill_reaches_the_process_group,
            kill_after_exit_is_fine,
            kill_while_stdin_is_full,
            wait_is_cancel_safe,
            dropping_a_process_kills_it,
            concurrent_commands,
            unsupported_capabilities,
            containers,
            terminals,
        );
    };
    (@cases $factory:path; $($case:ident,)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let subject = $factory().await;
                $crate::cases::$case(subject.runtime.clone()).await;
            }
        )*
    };
}

/// The cases, each a function of the runtime under test.
pub mod cases {
    use super::*;

    const NO_SUCH_PROGRAM: &str = "locald-conformance-no-such-program";

    fn sh(script: &str) -> Command {
        Command::new("sh").args(["-c", script])
    }

    /// Captured stdout and stderr stay apart, and the exit code comes back.
    pub async fn output_and_exit_code(rt: Arc<dyn Runtime>) {
        let out = rt
            .run_command(sh("echo hi; echo err >&2; exit 3"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status, ExitStatus::Exited(3));
        let out = rt.run_command(Command::new("true")).await.unwrap();
        assert!(out.status.success());
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }

    fn every_byte(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Bytes of every value go through stdin and come back unchanged, captured and
    /// spawned alike.
    pub async fn exact_bytes_through_stdin_and_stdout(rt: Arc<dyn Runtime>) {
        let input = every_byte(3 << 20);
        let out = rt
            .run_command(Command::new("cat").stdin_bytes(input.clone()))
            .await
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), input.len());
        assert!(out.stdout == input, "stdout differs from stdin");

        let mut p = rt
            .spawn(Command::new("cat").stdin(Stdin::Piped).stdout(Stdio::Piped))
            .await
            .unwrap();
        let mut stdin = p.take_stdin().expect("stdin is piped");
        let mut stdout = p.take_stdout().expect("stdout is piped");
        let feed = input.clone();
        let writer = tokio::spawn(async move {
            stdin.write_all(&feed).await.unwrap();
            stdin.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == input, "spawned cat changed the bytes");
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));
    }

    /// Input and output far larger than any single message still arrive whole.
    pub async fn large_stdin_and_output(rt: Arc<dyn Runtime>) {
        let input = every_byte(6 << 20);
        let out = rt
            .run_command(
                Command::new("sh")
                    .args(["-c", "cat; echo done >&2"])
                    .stdin_bytes(input.clone()),
            )
            .await
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), input.len());
        assert!(out.stdout == input, "stdout differs from stdin");
        assert_eq!(out.stderr, b"done\n");
    }

    /// Interleaved writes to stdout and stderr keep their order within each stream.
    pub async fn large_output_in_order_per_stream(rt: Arc<dyn Runtime>) {
        let out = rt
            .run_command(sh(
                "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
            ))
            .await
            .unwrap();
        let expect =
            |prefix: &str| -> String { (0..3000).map(|i| format!("{prefix}{i}\n")).collect() };
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expect("out"));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), expect("err"));
    }

    /// A process killed by a signal reports the signal.
    pub async fn killed_by_a_signal(rt: Arc<dyn Runtime>) {
        let out = rt.run_command(sh("kill -TERM $$")).await.unwrap();
        assert_eq!(out.status, ExitStatus::Signaled(Signal::TERM));
        assert_eq!(out.status.shell_code(), 143);
        let out = rt.run_command(sh("kill -KILL $$")).await.unwrap();
        assert_eq!(out.status, ExitStatus::Signaled(Signal::KILL));
    }

    /// `run_command` past its timeout fails with `Error::Timeout` and its message.
    pub async fn run_command_timeout(rt: Arc<dyn Runtime>) {
        let started = std::time::Instant::now();
        let err = rt
            .run_command(
                Command::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(300)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "sleep timed out after 300ms and was killed"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// A spawned process past its timeout makes `wait` fail, every time.
    pub async fn spawn_timeout(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(
                Command::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let err = p.wait().await.unwrap_err();
            assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                "sleep timed out after 200ms and was killed"
            );
        }
    }

    /// A program that does not exist is `ProgramNotFound`, from both entry points.
    pub async fn missing_program(rt: Arc<dyn Runtime>) {
        let expected = format!("program not found: {NO_SUCH_PROGRAM}");
        let err = rt
            .run_command(Command::new(NO_SUCH_PROGRAM))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ProgramNotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
        let err = rt.spawn(Command::new(NO_SUCH_PROGRAM)).await.unwrap_err();
        assert!(matches!(err, Error::ProgramNotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }

    /// A working directory that does not exist is `WorkingDirNotFound`.
    pub async fn missing_working_directory(rt: Arc<dyn Runtime>) {
        let err = rt
            .run_command(Command::new("true").current_dir("/no/such/dir"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WorkingDirNotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), "working directory not found: /no/such/dir");
    }

    /// A command that cannot be valid is `InvalidInput`, with the same message.
    pub async fn invalid_command(rt: Arc<dyn Runtime>) {
        let err = rt
            .run_command(Command::new("env").env("A=B", "1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    what: "environment variable name",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid environment variable name \"A=B\": must be non-empty and contain neither '=' nor NUL"
        );
        let err = rt.spawn(Command::new("")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid command \"\": the program name is empty"
        );
    }

    /// Environment variables are set, removed and cleared; the working directory is used.
    pub async fn env_and_working_directory(rt: Arc<dyn Runtime>) {
        let out = rt
            .run_command(
                sh("echo \"$A|${HOME-unset}|$(pwd)\"")
                    .env("A", "1")
                    .env_remove("HOME")
                    .current_dir("/"),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, b"1|unset|/\n");
        let out = rt
            .run_command(Command::new("/usr/bin/env").env_clear().env("ONLY", "me"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"ONLY=me\n");
    }

    /// `Null` discards, `Piped` and `Capture` collect.
    pub async fn null_and_piped_streams(rt: Arc<dyn Runtime>) {
        let out = rt
            .run_command(
                sh("echo out; echo err >&2")
                    .stdout(Stdio::Null)
                    .stderr(Stdio::Piped),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, b"");
        assert_eq!(out.stderr, b"err\n");
        let mut p = rt
            .spawn(sh("echo out").stdout(Stdio::Null).stderr(Stdio::Null))
            .await
            .unwrap();
        assert!(p.take_stdout().is_none() && p.take_stderr().is_none() && p.take_stdin().is_none());
        assert!(p.id().is_some());
        assert!(p.wait().await.unwrap().success());
    }

    /// A spawned process streams: the caller reads a line, answers, reads the next.
    pub async fn spawn_streams_both_ways(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(
                sh("echo ready; read answer; echo got:$answer; echo done >&2; exit 5")
                    .stdin(Stdin::Piped)
                    .stdout(Stdio::Piped),
            )
            .await
            .unwrap();
        let mut stdin = p.take_stdin().unwrap();
        let mut lines = BufReader::new(p.take_stdout().unwrap()).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
        stdin.write_all(b"42\n").await.unwrap();
        stdin.flush().await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("got:42"));
        assert_eq!(lines.next_line().await.unwrap(), None);
        let mut stderr = String::new();
        p.take_stderr()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        assert_eq!(stderr, "done\n");
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(5));
    }

    /// Dropping stdin is end of file for the process.
    pub async fn stdin_end_of_file(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(Command::new("wc").arg("-c").stdin(Stdin::Piped))
            .await
            .unwrap();
        let mut stdin = p.take_stdin().unwrap();
        stdin.write_all(b"12345").await.unwrap();
        drop(stdin);
        let out = p.output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
        // Output::wait closes a stdin nobody took.
        let p = rt
            .spawn(Command::new("cat").stdin(Stdin::Piped))
            .await
            .unwrap();
        let out = p.output().await.unwrap();
        assert!(out.status.success() && out.stdout.is_empty());
    }

    /// `kill` signals the process and everything in its group.
    pub async fn kill_reaches_the_process_group(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(sh("sleep 30 & echo $!; wait").stdout(Stdio::Piped))
            .await
            .unwrap();
        let mut lines = BufReader::new(p.take_stdout().unwrap()).lines();
        let child: u32 = lines.next_line().await.unwrap().unwrap().parse().unwrap();
        p.kill(Signal::TERM).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(Signal::TERM));
        assert_gone(&rt, child).await;
    }

    /// A process that does not read its input can still be killed while the caller
    /// is stuck writing to it.
    pub async fn kill_while_stdin_is_full(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(Command::new("sleep").arg("30").stdin(Stdin::Piped))
            .await
            .unwrap();
        let mut stdin = p.take_stdin().unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..32 {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.kill(Signal::TERM).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(Signal::TERM));
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }

    /// Killing a process that already ended is not an error.
    pub async fn kill_after_exit_is_fine(rt: Arc<dyn Runtime>) {
        let mut p = rt.spawn(Command::new("true")).await.unwrap();
        assert!(p.wait().await.unwrap().success());
        p.kill(Signal::KILL).await.unwrap();
        assert!(p.wait().await.unwrap().success(), "the status stays");
    }

    /// `wait` can be cancelled and called again without losing the status.
    pub async fn wait_is_cancel_safe(rt: Arc<dyn Runtime>) {
        let mut p = rt.spawn(sh("sleep 0.3; exit 4")).await.unwrap();
        let first = tokio::time::timeout(Duration::from_millis(20), p.wait()).await;
        assert!(first.is_err(), "still running");
        p.kill(Signal::USR1).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(Signal::USR1));
        let mut p = rt.spawn(sh("sleep 0.2; exit 4")).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(20), p.wait()).await;
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(4));
    }

    /// Waits until `pid` no longer runs, asking the runtime itself (it may be
    /// elsewhere).
    async fn assert_gone(rt: &Arc<dyn Runtime>, pid: u32) {
        for _ in 0..200 {
            let out = rt
                .run_command(sh(&format!(
                    "kill -0 {pid} 2>/dev/null && ! grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null"
                )))
                .await
                .unwrap();
            if !out.status.success() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process {pid} still runs");
    }

    /// Dropping a process that was not waited for kills it and its group.
    pub async fn dropping_a_process_kills_it(rt: Arc<dyn Runtime>) {
        let mut p = rt
            .spawn(sh("sleep 30 & echo $!; wait").stdout(Stdio::Piped))
            .await
            .unwrap();
        let leader = p.id().expect("a process id");
        let mut lines = BufReader::new(p.take_stdout().unwrap()).lines();
        let child: u32 = lines.next_line().await.unwrap().unwrap().parse().unwrap();
        drop(p);
        assert_gone(&rt, child).await;
        assert_gone(&rt, leader).await;
    }

    /// Many commands at once each get their own output.
    pub async fn concurrent_commands(rt: Arc<dyn Runtime>) {
        let runs = (0..24).map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let out = rt
                    .run_command(sh(&format!("echo {i}; exit {}", i % 5)))
                    .await
                    .unwrap();
                assert_eq!(out.stdout, format!("{i}\n").into_bytes());
                assert_eq!(out.status.code(), Some(i % 5));
            })
        });
        for run in runs {
            run.await.unwrap();
        }
    }

    fn assert_unsupported(rt: &Arc<dyn Runtime>, err: Error, capability: Capability) {
        assert!(err.is_unsupported(), "{err:?}");
        assert_eq!(
            err.to_string(),
            rt.info().unsupported(capability).to_string()
        );
    }

    /// What the runtime cannot do, it says with `Unsupported`, naming itself.
    pub async fn unsupported_capabilities(rt: Arc<dyn Runtime>) {
        let info = rt.info();
        assert!(info.supports(Capability::Commands));
        if !info.supports(Capability::Images) {
            let image: ImageRef = "busybox".parse().unwrap();
            let err = rt
                .pull_image(&image, PullOptions::default())
                .await
                .unwrap_err();
            assert_unsupported(&rt, err, Capability::Images);
        }
        if !info.supports(Capability::Exec) {
            let err = rt.exec("web", Command::new("true")).await.unwrap_err();
            assert_unsupported(&rt, err, Capability::Exec);
        }
        if !info.supports(Capability::Containers) {
            let spec = ContainerSpec::builder("busybox").build().unwrap();
            let err = rt.run_container(spec).await.unwrap_err();
            assert_unsupported(&rt, err, Capability::Containers);
            for err in [
                rt.list_containers(true).await.map(drop).unwrap_err(),
                rt.inspect_container("web").await.map(drop).unwrap_err(),
                rt.wait_container("web").await.map(drop).unwrap_err(),
                rt.stop_container("web", Duration::from_secs(1))
                    .await
                    .unwrap_err(),
                rt.kill_container("web", Signal::TERM).await.unwrap_err(),
                rt.remove_container("web", true).await.unwrap_err(),
                rt.container_logs("web", LogOptions::default())
                    .await
                    .map(drop)
                    .unwrap_err(),
            ] {
                assert_unsupported(&rt, err, Capability::Containers);
            }
        }
    }

    /// The root filesystem for container cases: `LOCALD_CONFORMANCE_ROOTFS`, else the
    /// shared busybox fixture where it can be used (Linux, as root), else why not.
    fn rootfs() -> Result<std::ffi::OsString, &'static str> {
        if let Some(rootfs) = std::env::var_os("LOCALD_CONFORMANCE_ROOTFS") {
            return Ok(rootfs);
        }
        #[cfg(target_os = "linux")]
        {
            use locald_runtime::testing;
            if testing::is_root() {
                let rootfs = testing::shared_busybox_rootfs().expect("the busybox rootfs");
                return Ok(rootfs.into());
            }
            Err("containers need root and LOCALD_CONFORMANCE_ROOTFS names no root filesystem")
        }
        #[cfg(not(target_os = "linux"))]
        Err("LOCALD_CONFORMANCE_ROOTFS names no root filesystem")
    }

    /// A container's life cycle: run, output, wait, list, logs, remove.
    #[allow(clippy::print_stderr)] // a skipped case must say so loudly
    pub async fn containers(rt: Arc<dyn Runtime>) {
        if !rt.info().supports(Capability::Containers) {
            return; // `unsupported_capabilities` checks the error.
        }
        let rootfs = match rootfs() {
            Ok(rootfs) => rootfs,
            Err(why) => {
                eprintln!(
                    "\n!!! SKIPPED containers: the {} runtime runs containers but {why} !!!\n",
                    rt.info().name
                );
                return;
            }
        };
        let spec = ContainerSpec::builder_from_rootfs(rootfs.to_string_lossy().as_ref())
            .cmd(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
            .build()
            .unwrap();
        let mut handle = rt.run_container(spec).await.unwrap();
        let id = handle.id().to_owned();
        assert_eq!(handle.wait().await.unwrap(), ExitStatus::Exited(3));
        assert_eq!(rt.wait_container(&id).await.unwrap(), ExitStatus::Exited(3));
        let listed = rt.list_containers(true).await.unwrap();
        assert!(listed.iter().any(|c| c.id == id), "{listed:?}");
        let summary = rt.inspect_container(&id).await.unwrap();
        assert_eq!(
            summary.state,
            locald_core::ContainerState::Exited(ExitStatus::Exited(3))
        );
        let mut logs = rt.container_logs(&id, LogOptions::default()).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| logs.as_mut().poll_next(cx)).await {
            out.push(chunk.unwrap());
        }
        let stdout: Vec<u8> = out
            .iter()
            .filter(|(s, _)| *s == locald_core::LogStream::Stdout)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(stdout, b"out\n");
        rt.remove_container(&id, false).await.unwrap();
        let err = rt.inspect_container(&id).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    /// On a terminal, the program prints its size, then waits for `SIGWINCH`, prints
    /// the new size and exits 7.
    const ON_A_TERMINAL: &str = "trap 'stty size; exit 7' WINCH; stty size; \
                                 while :; do sleep 0.1; done";

    /// Reads `out` until it holds `want` (a terminal ends lines with `\r\n`).
    async fn read_until(
        out: &mut (impl tokio::io::AsyncRead + Unpin),
        seen: &mut String,
        want: &str,
    ) {
        let mut buf = [0u8; 256];
        let read = async {
            while !seen.contains(want) {
                let n = out.read(&mut buf).await.unwrap();
                assert!(n > 0, "the output ended before {want:?}: {seen:?}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap_or_else(|_| panic!("no {want:?} on the terminal: {seen:?}"));
    }

    /// A container and an exec on a terminal: both start at the size asked for and see
    /// a resize as a program on a real terminal does (`SIGWINCH`, the new size).
    #[allow(clippy::print_stderr)] // a skipped case must say so loudly
    pub async fn terminals(rt: Arc<dyn Runtime>) {
        if !rt.info().supports(Capability::Containers) {
            return;
        }
        let rootfs = match rootfs() {
            Ok(rootfs) => rootfs,
            Err(why) => {
                eprintln!(
                    "\n!!! SKIPPED terminals: the {} runtime runs containers but {why} !!!\n",
                    rt.info().name
                );
                return;
            }
        };
        let rootfs = rootfs.to_string_lossy().into_owned();
        let spec = ContainerSpec::builder_from_rootfs(rootfs.as_str())
            .cmd(["/bin/sh", "-c", ON_A_TERMINAL])
            .terminal_size(TerminalSize::new(24, 80))
            .build()
            .unwrap();
        let mut handle = rt.run_container(spec).await.unwrap();
        let id = handle.id().to_owned();
        let mut out = handle
            .process()
            .take_stdout()
            .expect("the terminal's output");
        let mut seen = String::new();
        read_until(&mut out, &mut seen, "24 80\r\n").await;
        handle
            .process()
            .resize(TerminalSize::new(50, 132))
            .await
            .unwrap();
        read_until(&mut out, &mut seen, "50 132\r\n").await;
        assert_eq!(handle.wait().await.unwrap(), ExitStatus::Exited(7));
        rt.remove_container(&id, false).await.unwrap();

        if !rt.info().supports(Capability::Exec) {
            return;
        }
        let spec = ContainerSpec::builder_from_rootfs(rootfs.as_str())
            .cmd(["sleep", "300"])
            .build()
            .unwrap();
        let handle = rt.run_container(spec).await.unwrap();
        let id = handle.id().to_owned();
        // Without a terminal, a resize is refused.
        let mut plain = rt
            .exec(&id, Command::new("sleep").arg("300"))
            .await
            .unwrap();
        let err = plain.resize(TerminalSize::new(10, 10)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        plain.kill(Signal::KILL).await.unwrap();
        plain.wait().await.unwrap();

        let command = sh(ON_A_TERMINAL)
            .terminal_size(TerminalSize::new(30, 100))
            .stdout(Stdio::Piped)
            .stderr(Stdio::Piped);
        let mut process = rt.exec(&id, command).await.unwrap();
        let mut out = process.take_stdout().expect("the terminal's output");
        let mut seen = String::new();
        read_until(&mut out, &mut seen, "30 100\r\n").await;
        process.resize(TerminalSize::new(61, 200)).await.unwrap();
        read_until(&mut out, &mut seen, "61 200\r\n").await;
        assert_eq!(process.wait().await.unwrap(), ExitStatus::Exited(7));
        let mut err = String::new();
        if let Some(mut stderr) = process.take_stderr() {
            stderr.read_to_string(&mut err).await.unwrap();
        }
        assert_eq!(err, "", "a terminal carries all of the output");

        // The size is there from the command's first instruction, every time: a command
        // that asked at once could see none (its terminal was sized while it ran).
        for _ in 0..20 {
            let command = Command::new("stty")
                .arg("size")
                .terminal_size(TerminalSize::new(33, 111))
                .stdout(Stdio::Piped);
            let mut process = rt.exec(&id, command).await.unwrap();
            let mut out = process.take_stdout().expect("the terminal's output");
            let mut seen = String::new();
            read_until(&mut out, &mut seen, "33 111\r\n").await;
            assert_eq!(
                process.wait().await.unwrap(),
                ExitStatus::Exited(0),
                "{seen:?}"
            );
        }
        rt.remove_container(&id, true).await.unwrap();
    }
}
