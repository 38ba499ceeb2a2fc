//! The helper's whole input: two verbs and their arguments, validated strictly, and
//! the root-owned configuration `locald setup` writes.

use std::ffi::OsString;

/// The ports `bind` accepts.
pub(crate) const ALLOWED_PORTS: [u16; 2] = [80, 443];
/// At most this many names in one `hosts sync`.
pub(crate) const MAX_NAMES: usize = 1024;

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verb {
    /// Bind 127.0.0.1:PORT and hand the listening socket back.
    Bind(u16),
    /// Make the locald block of /etc/hosts list exactly these names.
    HostsSync(Vec<String>),
}

/// The configuration `locald setup` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// The only user allowed to run the helper.
    pub(crate) uid: u32,
    /// Name suffixes besides `localhost` that `hosts sync` accepts.
    pub(crate) suffixes: Vec<String>,
}

/// Whether `name` is a DNS host name of RFC 1123 labels (letters, digits, inner
/// hyphens, 1–63 characters each; at most 253 in all; lowercase).
pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn under(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len()
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: &[OsString], suffixes: &[String]) -> Result<Verb, String> {
    let args: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().ok_or("an argument is not UTF-8"))
        .collect::<Result<_, _>>()?;
    match args.as_slice() {
        ["bind", port] => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bind: {port:?} is not a port number"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| format!("bind: {port:?} is not a port number"))?;
            if !ALLOWED_PORTS.contains(&port) {
                return Err(format!(
                    "bind: port {port} is not allowed (only 80 and 443)"
                ));
            }
            Ok(Verb::Bind(port))
        }
        ["bind", ..] => Err("bind takes exactly one argument, the port".into()),
        ["hosts", "sync", names @ ..] => {
            if names.len() > MAX_NAMES {
                return Err(format!("hosts sync: more than {MAX_NAMES} names"));
            }
            let mut out: Vec<String> = Vec::new();
            for n in names {
                if !is_host_name(n) {
                    return Err(format!("hosts sync: {n:?} is not a lowercase host name"));
                }
                if !under(n, "localhost") && !suffixes.iter().any(|s| under(n, s)) {
                    return Err(format!(
                        "hosts sync: {n:?} is not under .localhost{}",
                        suffixes
                            .iter()
                            .map(|s| format!(" or .{s}"))
                            .collect::<String>()
                    ));
                }
                if !out.iter().any(|o| o == n) {
                    out.push((*n).to_owned());
                }
            }
            Ok(Verb::HostsSync(out))
        }
        _ => Err("usage: locald-privhelper bind 80|443 | hosts sync NAME...".into()),
    }
}

/// Parses the configuration: `uid = N` once, `suffix = NAME` any number of times,
/// `#` comments.
pub(crate) fn parse_config(text: &str) -> Result<Config, String> {
    let mut uid = None;
    let mut suffixes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not KEY = VALUE", i + 1))?;
        match (k.trim(), v.trim()) {
            ("uid", v) if uid.is_none() => {
                uid = Some(v.parse().map_err(|_| format!("line {}: bad uid", i + 1))?)
            }
            ("suffix", v) if is_host_name(v) && v != "localhost" => suffixes.push(v.to_owned()),
            _ => return Err(format!("line {}: unexpected {line:?}", i + 1)),
        }
    }
    Ok(Config {
        uid: uid.ok_or("no uid")?,
        suffixes,
    })
}

/// The block for `names` (empty when there are none).
pub(crate) fn hosts_block(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut b = String::from("# BEGIN locald\n");
    for n in names {
        b.push_str(&format!("127.0.0.1 {n}\n::1 {n}\n"));
    }
    b.push_str("# END locald\n");
    b
}

/// `hosts` with its locald block replaced by `block` (appended when there was none).
pub(crate) fn replace_block(hosts: &str, block: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut inside = false;
    let mut seen = false;
    for line in hosts.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "# BEGIN locald" {
            if inside || seen {
                return Err("/etc/hosts has more than one locald block".into());
            }
            inside = true;
            seen = true;
            out.push_str(block);
        } else if t == "# END locald" {
            if !inside {
                return Err("/etc/hosts has an END locald line without BEGIN".into());
            }
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    if inside {
        return Err("/etc/hosts has a BEGIN locald line without END".into());
    }
    if !seen {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn verbs() {
        assert_eq!(parse(&os(&["bind", "443"]), &[]), Ok(Verb::Bind(443)));
        assert_eq!(parse(&os(&["bind", "80"]), &[]), Ok(Verb::Bind(80)));
        for bad in [
            &["bind", "22"][..],
            &["bind", "+443"][..],
            &["bind", "443", "x"][..],
            &["bind"][..],
            &["hosts"][..],
            &["hosts", "sync", "../etc/passwd"][..],
            &["hosts", "sync", "web.localhost", "evil.com"][..],
            &["hosts", "sync", "Web.localhost"][..],
            &["hosts", "sync", "a b.localhost"][..],
            &["hosts", "sync", "web.localhost\n1.2.3.4 bank.com"][..],
            &["hosts", "sync", "localhost"][..],
            &[][..],
        ] {
            assert!(parse(&os(bad), &[]).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse(
                &os(&["hosts", "sync", "web.shop.localhost", "api.dev.test"]),
                &["dev.test".into()]
            ),
            Ok(Verb::HostsSync(vec![
                "web.shop.localhost".into(),
                "api.dev.test".into()
            ]))
        );
    }

    #[test]
    fn block_replacement() {
        let base = "127.0.0.1 localhost\n";
        let one = replace_block(base, &hosts_block(&["a.localhost".into()])).unwrap();
        assert_eq!(
            one,
            "127.0.0.1 localhost\n# BEGIN locald\n127.0.0.1 a.localhost\n::1 a.localhost\n# END locald\n"
        );
        let two = replace_block(
            &format!("{one}10.0.0.1 other\n"),
            &hosts_block(&["b.localhost".into()]),
        )
        .unwrap();
        assert!(
            two.contains("b.localhost") && !two.contains("a.localhost") && two.ends_with("other\n")
        );
        assert_eq!(replace_block(&one, "").unwrap(), base);
        assert!(replace_block("# BEGIN locald\nx\n", "").is_err());
    }

    #[test]
    fn config() {
        let c = parse_config("# by locald setup\nuid = 1001\nsuffix = dev.test\n").unwrap();
        assert_eq!(
            c,
            Config {
                uid: 1001,
                suffixes: vec!["dev.test".into()]
            }
        );
        assert!(parse_config("uid = 1\nuid = 2\n").is_err());
        assert!(parse_config("suffix = x\n").is_err());
        assert!(parse_config("uid = 1\nhosts = /tmp/x\n").is_err());
    }

    proptest! {
        #[test]
        fn any_arguments_parse_to_allowed_verbs_only(args in proptest::collection::vec(".{0,40}", 0..5)) {
            let os: Vec<OsString> = args.iter().map(OsString::from).collect();
            match parse(&os, &["dev.test".into()]) {
                Ok(Verb::Bind(p)) => prop_assert!(ALLOWED_PORTS.contains(&p)),
                Ok(Verb::HostsSync(names)) => {
                    for n in &names {
                        prop_assert!(is_host_name(n));
                        prop_assert!(under(n, "localhost") || under(n, "dev.test"));
                        // Nothing that could break the hosts file's line format.
                        prop_assert!(!n.contains(|c: char| c.is_whitespace() || c == '#' || c == '/'));
                    }
                }
                Err(_) => {}
            }
        }

        #[test]
        fn valid_names_are_accepted(labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4)) {
            let name = format!("{}.localhost", labels.join("."));
            let os = vec![OsString::from("hosts"), OsString::from("sync"), OsString::from(&name)];
            prop_assert_eq!(parse(&os, &[]), Ok(Verb::HostsSync(vec![name])));
        }

        #[test]
        fn block_round_trips(names in proptest::collection::vec("[a-z]{1,8}\\.localhost", 0..5), other in "[a-z0-9 .]{0,30}") {
            let base = format!("127.0.0.1 localhost\n{other}\n");
            let with = replace_block(&base, &hosts_block(&names)).unwrap();
            prop_assert_eq!(replace_block(&with, "").unwrap(), base);
        }
    }
}
