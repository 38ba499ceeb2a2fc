//! Image commands: `pull`, `images`, `rmi`, `image prune`, `load`, `import`.

use std::{collections::HashMap, io::IsTerminal, io::Write, path::PathBuf, process::ExitCode};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use locald::{ImageRef, ImageSummary, PullOptions, PullProgress};

/// Arguments of `locald pull`.
#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// The image: `busybox`, `127.0.0.1:5000/tools/busybox:1.36`, `NAME@sha256:...`.
    image: String,
    /// The platform to pick from a multi-platform image (`linux/arm64`).
    #[arg(long)]
    platform: Option<String>,
    /// Allow plain HTTP or an unverified certificate for this image's registry.
    #[arg(long)]
    insecure: bool,
    /// Print only the reference when done.
    #[arg(short, long)]
    quiet: bool,
}

/// Shows pull progress: bars on a terminal, plain lines otherwise.
struct ProgressView {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
}

impl ProgressView {
    fn new(quiet: bool) -> Option<Self> {
        if quiet {
            return None;
        }
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| (MultiProgress::new(), HashMap::new()));
        Some(ProgressView { bars })
    }

    #[allow(clippy::print_stderr)]
    fn show(&mut self, event: PullProgress) {
        let short = |d: &str| {
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        };
        match (&mut self.bars, event) {
            (_, PullProgress::Resolved { digest, layers }) => {
                eprintln!("resolved {digest} ({layers} layers)");
            }
            (Some((multi, bars)), PullProgress::LayerProgress { digest, done, size }) => {
                let bar = bars.entry(digest.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("a valid template"),
                    );
                    bar.set_prefix(short(&digest));
                    bar
                });
                bar.set_position(done);
            }
            (Some((multi, bars)), PullProgress::LayerDone { digest }) => match bars.get(&digest) {
                Some(bar) => bar.finish_with_message("done"),
                None => {
                    let _ = multi.println(format!("{}: done", short(&digest)));
                }
            },
            (Some((multi, _)), PullProgress::LayerCached { digest }) => {
                let _ = multi.println(format!("{}: already stored", short(&digest)));
            }
            (
                Some((multi, _)),
                PullProgress::LayerRetry {
                    digest,
                    attempt,
                    error,
                },
            ) => {
                let _ = multi.println(format!(
                    "{}: retrying (try {attempt}): {error}",
                    short(&digest)
                ));
            }
            (None, PullProgress::LayerDone { digest }) => eprintln!("{}: done", short(&digest)),
            (None, PullProgress::LayerCached { digest }) => {
                eprintln!("{}: already stored", short(&digest))
            }
            (
                None,
                PullProgress::LayerRetry {
                    digest,
                    attempt,
                    error,
                },
            ) => {
                eprintln!("{}: retrying (try {attempt}): {error}", short(&digest))
            }
            (None, PullProgress::LayerProgress { .. }) => {}
            (_, _) => {}
        }
    }
}

/// Runs `work` with a progress channel drained into a view; also says whether any
/// layer had to be fetched.
async fn with_progress<T>(
    quiet: bool,
    work: impl FnOnce(
        PullOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = locald::Result<T>>>>,
) -> locald::Result<(T, bool)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut view = ProgressView::new(quiet);
    let mut fetched = false;
    let mut show = |event: PullProgress| {
        fetched |= matches!(event, PullProgress::LayerDone { .. });
        if let Some(v) = &mut view {
            v.show(event)
        }
    };
    let fut = work(PullOptions::default().progress(tx));
    tokio::pin!(fut);
    let result = loop {
        tokio::select! {
            result = &mut fut => {
                while let Ok(event) = rx.try_recv() {
                    show(event);
                }
                break result;
            }
            Some(event) = rx.recv() => show(event),
        }
    };
    result.map(|r| (r, fetched))
}

pub(crate) async fn pull(args: PullArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let image: ImageRef = args.image.parse()?;
    let runtime = crate::cli::runtime(host).await?;
    let platform = args.platform.clone();
    let insecure = args.insecure;
    let (summary, fetched) = with_progress(args.quiet, |mut opts| {
        opts.platform = platform;
        opts.insecure = insecure;
        let image = image.clone();
        let runtime = runtime.clone();
        Box::pin(async move { runtime.pull_image(&image, opts).await })
    })
    .await?;
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(out, "Digest: {}", summary.digest)?;
        if fetched {
            writeln!(
                out,
                "Status: pulled {} for {}",
                summary.platform, summary.reference
            )?;
        } else {
            writeln!(out, "Status: image is up to date for {}", summary.reference)?;
        }
    }
    writeln!(out, "{}", summary.reference)?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald images`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print only image ids.
    #[arg(short, long)]
    quiet: bool,
}

/// `1.5MB`, as docker prints sizes (decimal units).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + UNITS[unit]
    }
}

fn ago(created: Option<&str>) -> String {
    let Some(then) = created.and_then(|c| humantime::parse_rfc3339_weak(c).ok()) else {
        return "N/A".into();
    };
    // A time in the future (a clock skewed against the registry's) reads as now.
    let secs = std::time::SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        s if s < 60 => return "less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn split_name(summary: &ImageSummary) -> (String, String) {
    let familiar = summary.reference.familiar();
    let name = familiar.split('@').next().unwrap_or(&familiar);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (name.to_owned(), "<none>".to_owned()),
    }
}

pub(crate) async fn images(args: ImagesArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut images = crate::cli::runtime(host).await?.list_images().await?;
    images.sort_by_key(|i| i.reference.to_string());
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &images).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if args.quiet {
        for image in &images {
            writeln!(out, "{}", &image.id.trim_start_matches("sha256:")[..12])?;
        }
    } else {
        let rows: Vec<[String; 5]> = images
            .iter()
            .map(|i| {
                let (repo, tag) = split_name(i);
                [
                    repo,
                    tag,
                    i.id.trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect(),
                    ago(i.created.as_deref()),
                    human_size(i.size),
                ]
            })
            .collect();
        let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
        let widths: Vec<usize> = (0..5)
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i == 4 {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{:<w$}   ", cell, w = widths[i]));
                }
            }
            s
        };
        writeln!(out, "{}", line(header))?;
        for r in &rows {
            writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald rmi`.
#[derive(Debug, clap::Args)]
pub(crate) struct RmiArgs {
    /// The images to untag.
    #[arg(required = true)]
    images: Vec<String>,
}

pub(crate) async fn rmi(args: RmiArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli::runtime(host).await?;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    for name in &args.images {
        let result = async {
            let image: ImageRef = name.parse()?;
            runtime.remove_image(&image).await
        }
        .await;
        match result {
            Ok(summary) => writeln!(out, "Untagged: {}", summary.reference.familiar())?,
            Err(e) => {
                crate::cli::report(&anyhow::Error::new(e));
                failed = Some(ExitCode::FAILURE);
            }
        }
    }
    Ok(failed.unwrap_or(ExitCode::SUCCESS))
}

/// `locald image ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ImageCommand {
    /// Remove blobs and unpacked layers no image refers to.
    Prune,
    /// List images (as `locald images`).
    Ls(ImagesArgs),
    /// Pull an image (as `locald pull`).
    Pull(PullArgs),
    /// Untag images (as `locald rmi`).
    Rm(RmiArgs),
}

pub(crate) async fn image(cmd: ImageCommand, host: Option<&str>) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Prune => {
            let report = crate::cli::runtime(host).await?.prune_images().await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "Removed {} blobs and {} layers; reclaimed {}",
                report.blobs,
                report.layers,
                human_size(report.bytes)
            )?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls(args) => images(args, host).await,
        ImageCommand::Pull(args) => pull(args, host).await,
        ImageCommand::Rm(args) => rmi(args, host).await,
    }
}

/// Arguments of `locald load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// An OCI image layout directory, or a tar of one.
    path: PathBuf,
}

pub(crate) async fn load(args: LoadArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let loaded = crate::cli::runtime(host)
        .await?
        .load_image(&args.path)
        .await?;
    let mut out = std::io::stdout().lock();
    for image in loaded {
        writeln!(out, "Loaded image: {}", image.reference.familiar())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// A root filesystem: a directory, or a tar (optionally gzip-compressed).
    rootfs: PathBuf,
    /// The name to give the image (`myimage:1.0`).
    reference: String,
}

pub(crate) async fn import(args: ImportArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let image: ImageRef = args.reference.parse()?;
    let summary = crate::cli::runtime(host)
        .await?
        .import_image(&args.rootfs, &image)
        .await?;
    writeln!(std::io::stdout().lock(), "{}", summary.id)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(77_800_000_000), "77.8GB");
    }

    #[test]
    fn times() {
        let at = |secs_ago: u64| {
            humantime::format_rfc3339_nanos(
                std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago),
            )
            .to_string()
        };
        assert_eq!(ago(Some(&at(5))), "less than a minute ago");
        assert_eq!(ago(Some(&at(3 * 3600 + 5))), "3 hours ago");
        assert_eq!(ago(Some(&at(86_400 + 5))), "1 day ago");
        assert!(ago(Some("1970-01-01T00:00:00Z")).ends_with("years ago"));
        assert_eq!(ago(Some("garbage")), "N/A");
        assert_eq!(ago(None), "N/A");
    }
}
