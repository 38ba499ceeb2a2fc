//! The setuid helper as a normal user would meet it: installed by `locald setup`, used
//! by the user `locald-proxy-test` (made by scripts/test), refused to anyone else and for
//! anything but its two verbs.
//!
//! The real /etc/hosts is never touched. Each case runs in a mount and network
//! namespace of its own (`unshare -mn`): a copy of /etc is bind-mounted over /etc
//! (so /etc/hosts is an ordinary file there and the helper replaces it by rename),
//! a tmpfs holds the installed helper, and loopback is private, so port 443 is the
//! namespace's own. One case bind-mounts a single file over /etc/hosts, as container
//! runtimes do, to take the helper's in-place path. Needs root, unshare, setpriv,
//! busybox (httpd, a backend) and curl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
    helper: PathBuf,
}

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, "locald-proxy-test"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn env(test: &str) -> Option<Env> {
    if !locald_test_support::require(test, true, &["unshare", "setpriv", "busybox", "curl"]) {
        return None;
    }
    let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
        locald_test_support::unavailable(
            test,
            "needs the user locald-proxy-test (scripts/test makes it)",
        );
        return None;
    };
    let helper = Path::new(env!("CARGO_BIN_EXE_locald")).with_file_name("locald-privhelper");
    assert!(
        helper.is_file(),
        "{} is missing: build it with `cargo build -p locald-privhelper`",
        helper.display()
    );
    let dir = tempfile::tempdir().unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(dir.path())
        .status()
        .unwrap();
    Some(Env {
        dir,
        uid,
        gid,
        helper,
    })
}

impl Env {
    fn t(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `body` (sh) in fresh mount and network namespaces after installing the
    /// helper there with `locald setup --user locald-proxy-test`. `$AS_USER` runs a command
    /// as locald-proxy-test, `$OTHER` as nobody, `$H` is the installed helper.
    fn ns(&self, body: &str) -> Output {
        let script = format!(
            r#"set -e
t="$T"
ip link set lo up 2>/dev/null || true
mkdir -p /usr/local/libexec
[ -d "$t/etc" ] || cp -a /etc "$t/etc"
mount --bind "$t/etc" /etc
mount -t tmpfs -o mode=755 tmpfs /usr/local/libexec
"$LOCALD" setup --user locald-proxy-test --helper "$HELPER" >/dev/null
H=/usr/local/libexec/locald-privhelper
AS_USER="setpriv --reuid={uid} --regid={gid} --clear-groups --"
OTHER="setpriv --reuid=65534 --regid=65534 --clear-groups --"
set +e
{body}
"#,
            uid = self.uid,
            gid = self.gid,
        );
        Command::new("unshare")
            .args(["-mn", "--propagation", "private", "sh", "-c", &script])
            .env("T", self.t())
            .env("LOCALD", env!("CARGO_BIN_EXE_locald"))
            .env("HELPER", &self.helper)
            .output()
            .unwrap()
    }

    fn hosts(&self) -> String {
        std::fs::read_to_string(self.t().join("etc/hosts")).unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn setup_installs_a_setuid_helper_and_hosts_sync_replaces_only_its_block() {
    let Some(e) = env("privhelper hosts sync") else {
        return;
    };
    let o = e.ns(r#"ls -l "$H"; cat /etc/locald/privhelper.conf
$AS_USER "$H" hosts sync web.shop.localhost api.shop.localhost || exit 10
$AS_USER "$H" hosts sync web.shop.localhost || exit 11"#);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("-rwsr-xr-x 1 root root"), "{out}");
    assert!(out.contains(&format!("uid = {}", e.uid)), "{out}");
    let hosts = e.hosts();
    let real = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        hosts.starts_with(&real),
        "the lines outside the block are kept:\n{hosts}"
    );
    assert!(
        hosts.ends_with(
            "# BEGIN locald\n127.0.0.1 web.shop.localhost\n::1 web.shop.localhost\n# END locald\n"
        ),
        "{hosts}"
    );
    assert!(!hosts.contains("api.shop.localhost"), "{hosts}");
    // No temporary file left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(e.t().join("etc"))
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with(".hosts.locald"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        !real.contains("web.shop.localhost"),
        "the real /etc/hosts is untouched"
    );
}

#[test]
fn refusals_write_nothing() {
    let Some(e) = env("privhelper refusals") else {
        return;
    };
    let before = std::fs::read_to_string("/etc/hosts").unwrap();
    let cases = [
        (
            "$OTHER \"$H\" hosts sync web.shop.localhost",
            "uid 65534 may not use this helper",
        ),
        (
            "$AS_USER \"$H\" hosts sync bad_name.localhost",
            "not a lowercase host name",
        ),
        (
            "$AS_USER \"$H\" hosts sync ../etc/passwd",
            "not a lowercase host name",
        ),
        (
            "$AS_USER \"$H\" hosts sync bank.example.com",
            "not under .localhost",
        ),
        (
            "$AS_USER \"$H\" hosts sync 'x.localhost\n1.2.3.4 bank.com'",
            "not a lowercase host name",
        ),
        ("$AS_USER \"$H\" bind 443 extra", "exactly one argument"),
        ("$AS_USER \"$H\" bind 22", "not allowed"),
        (
            "$AS_USER \"$H\" --hosts=/tmp/x hosts sync a.localhost",
            "usage",
        ),
        (
            "$AS_USER \"$H\" bind 443",
            "standard output must be a unix socket",
        ),
    ];
    for (cmd, want) in cases {
        let o = e.ns(&format!("{cmd}\necho \"exit=$?\""));
        let out = text(&o);
        assert!(out.contains("exit=1"), "{cmd}: {out}");
        assert!(out.contains(want), "{cmd}: wanted {want:?} in {out}");
        assert_eq!(e.hosts(), before, "{cmd} wrote to hosts");
    }
    // Standard output and error closed by the caller: the helper's own files never
    // take their place (glibc reopens them on /dev/null for a setuid program, and the
    // helper refuses to run without them), so nothing it prints lands in a file.
    let o = e.ns("$AS_USER \"$H\" hosts sync a.localhost 1>&- 2>&-\necho \"exit=$?\"");
    let out = text(&o);
    assert!(out.contains("exit=0") || out.contains("exit=125"), "{out}");
    assert!(!e.hosts().contains("locald names"), "{}", e.hosts());

    // A symlinked /etc/hosts is not followed.
    let target = e.t().join("target");
    std::fs::write(&target, "127.0.0.1 localhost\n").unwrap();
    let o = e.ns(&format!(
        "ln -sf {} /etc/hosts\n$AS_USER \"$H\" hosts sync web.shop.localhost\necho \"exit=$?\"",
        target.display()
    ));
    let out = text(&o);
    assert!(
        out.contains("exit=1") && out.contains("not a regular file"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "127.0.0.1 localhost\n"
    );
}

#[test]
fn a_bind_mounted_hosts_file_is_rewritten_in_place() {
    let Some(e) = env("privhelper bind-mounted hosts") else {
        return;
    };
    let file = e.t().join("mounted-hosts");
    std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
    let o = e.ns(&format!(
        "mount --bind {} /etc/hosts\n$AS_USER \"$H\" hosts sync web.shop.localhost || exit 9",
        file.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "127.0.0.1 localhost\n# BEGIN locald\n127.0.0.1 web.shop.localhost\n::1 web.shop.localhost\n# END locald\n"
    );
}

#[test]
fn the_proxy_of_a_normal_user_gets_port_443_through_the_helper() {
    let Some(e) = env("privhelper bind 443") else {
        return;
    };
    let home = e.t().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(home.join("www")).unwrap();
    std::fs::write(home.join("www/index.html"), "hello through 443\n").unwrap();
    Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", e.uid, e.gid))
        .arg(&home)
        .status()
        .unwrap();
    let o = e.ns(&format!(
        r#"cd {home}
export LOCALD_HOME={home}/locald HOME={home}
echo "unprivileged_port_start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
$AS_USER busybox httpd -f -p 127.0.0.1:8080 -h {home}/www &
backend=$!
$AS_USER "$LOCALD" proxy --https 127.0.0.1:443 --route web.shop.localhost=8080 &
proxy=$!
for i in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:8080/ && break
    sleep 0.1
done
for i in $(seq 100); do
    curl -s -o /dev/null -k --resolve web.shop.localhost:443:127.0.0.1 https://web.shop.localhost/ && break
    sleep 0.1
done
curl -sS --cacert {home}/locald/ca/root.pem --resolve web.shop.localhost:443:127.0.0.1 https://web.shop.localhost/
echo "curl=$?"
echo "proxy uid=$(ps -o uid= -p $proxy | tr -d ' ')"
kill $backend $proxy"#,
        home = home.display()
    ));
    let out = text(&o);
    assert!(out.contains("hello through 443\ncurl=0"), "{out}");
    assert!(
        out.contains(&format!("proxy uid={}\n", e.uid)),
        "the proxy ran as locald-proxy-test: {out}"
    );
    // Ports below 1024 are privileged in that namespace, so 443 came from the helper.
    assert!(out.contains("unprivileged_port_start=1024"), "{out}");
}

#[test]
fn locald_up_serves_https_on_443_with_a_trusted_certificate_as_a_normal_user() {
    let Some(e) = env("privhelper locald up on 443") else {
        return;
    };
    if !locald_test_support::require(
        "privhelper locald up on 443",
        true,
        &["update-ca-certificates"],
    ) {
        return;
    }
    let home = e.t().join("home");
    let project = home.join("project");
    std::fs::create_dir_all(project.join("www")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/project");
    for f in ["locald.toml", "www/index.html"] {
        std::fs::copy(example.join(f), project.join(f)).unwrap();
    }
    Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", e.uid, e.gid))
        .arg(&home)
        .status()
        .unwrap();
    // The system store is changed only in the namespace: a copy of the anchors
    // directory is mounted over it (/etc, where the bundle is built, is a copy already).
    let o = e.ns(&format!(
        r#"cp -a /usr/local/share/ca-certificates {t}/anchors
mount --bind {t}/anchors /usr/local/share/ca-certificates
export HOME={home} LOCALD_HOME={home}/locald
unset XDG_RUNTIME_DIR LOCALD_HOST LOCALD_PROXY
cd {home}/project
$AS_USER "$LOCALD" up -d >{t}/up.log 2>&1 || {{ echo "up failed"; cat {t}/up.log; cat $LOCALD_HOME/daemon.log; }}
for i in $(seq 100); do
    curl -s -o /dev/null -k https://web.hello.localhost/ && break
    sleep 0.1
done
"$LOCALD" trust >/dev/null || echo "trust failed"
echo "page=$($AS_USER curl -sS https://web.hello.localhost/)"
echo "named=$($AS_USER curl -sS https://hello.localhost/)"
echo "redirect=$($AS_USER curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://web.hello.localhost/x)"
grep -c 'web.hello.localhost' /etc/hosts | sed 's/^/hosts=/'
echo "dashboard=$($AS_USER curl -sS -o /dev/null -w '%{{http_code}}' https://locald.localhost/)"
echo "link=$($AS_USER "$LOCALD" dashboard --no-open)"
pid=$($AS_USER "$LOCALD" daemon status --json | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
echo "daemon uid=$(ps -o uid= -p "$pid" | tr -d ' ')"
$AS_USER "$LOCALD" down -p hello >/dev/null 2>&1
kill "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done"#,
        t = e.t().display(),
        home = home.display(),
    ));
    let out = text(&o);
    assert!(out.contains("page=hello from locald up"), "{out}");
    // A name the project's locald.toml sets (`hosts`) reaches the service too.
    assert!(out.contains("named=hello from locald up"), "{out}");
    assert!(
        out.contains("redirect=308 https://web.hello.localhost/x"),
        "{out}"
    );
    // The dashboard is behind the proxy too, and its links point there.
    assert!(out.contains("dashboard=401"), "{out}");
    assert!(
        out.contains("link=https://locald.localhost/login?token="),
        "{out}"
    );
    assert!(
        out.contains("hosts=2"),
        "the helper listed the name in /etc/hosts: {out}"
    );
    assert!(out.contains(&format!("daemon uid={}\n", e.uid)), "{out}");
    assert!(!out.contains("failed"), "{out}");
}
