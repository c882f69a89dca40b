//! Progress on long work (a model's import, the guest SDK's one-time build): an `indicatif` bar
//! or spinner on a terminal, plain lines otherwise (every 10% for a bar; a line at the start and
//! the end for a spinner), so logs and pipes read cleanly.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where plain lines go when stderr is not a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// Straight to stderr (the command line's own output).
    Stderr,
    /// Through the log (`tracing`), as the host's other lines.
    Log,
}

/// A bar over a known number of bytes, drawn from its first step on (nothing shows for work
/// that never starts).
#[derive(Debug)]
pub struct Bytes {
    label: String,
    tty: bool,
    bar: Option<ProgressBar>,
    plain: Plain,
    shown: Option<u64>,
}

impl Bytes {
    pub fn new(label: &str, plain: Plain) -> Bytes {
        Bytes {
            label: label.to_owned(),
            tty: std::io::stderr().is_terminal(),
            bar: None,
            plain,
            shown: None,
        }
    }

    /// `done` of `total` bytes so far.
    pub fn show(&mut self, done: u64, total: u64) {
        if self.tty {
            let label = &self.label;
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(label.clone());
                bar
            });
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let tenth = (done * 10).checked_div(total).unwrap_or(10).min(10);
        if self.shown == Some(tenth) {
            return;
        }
        self.shown = Some(tenth);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        line(
            self.plain,
            &format!(
                "{}: {:3}% ({:.1} / {:.1} MiB)",
                self.label,
                tenth * 10,
                mib(done),
                mib(total)
            ),
        );
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

/// A spinner over work of unknown length.
#[derive(Debug)]
pub struct Spinner {
    label: String,
    bar: Option<ProgressBar>,
    plain: Plain,
    started: Instant,
}

impl Spinner {
    pub fn start(label: &str, plain: Plain) -> Spinner {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.set_message(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            line(plain, &format!("{label}…"));
            None
        };
        Spinner {
            label: label.to_owned(),
            bar,
            plain,
            started: Instant::now(),
        }
    }

    /// Done: `outcome` says how it went ("done", or why not).
    pub fn finish(self, outcome: &str) {
        let text = format!(
            "{}: {outcome} in {:.1} s",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        line(self.plain, &text);
    }
}

fn line(plain: Plain, text: &str) {
    match plain {
        Plain::Stderr => eprintln!("{text}"),
        Plain::Log => tracing::info!("{text}"),
    }
}

/// A spinner over the guest SDK's one-time build, for the forge to drive.
pub fn sdk_build_spinner(plain: Plain) -> batos_methods::forge::SdkHook {
    use batos_methods::forge::SdkBuild;
    let running = std::sync::Mutex::new(None::<Spinner>);
    batos_methods::forge::SdkHook(std::sync::Arc::new(move |step| {
        let mut running = match running.lock() {
            Ok(running) => running,
            Err(poisoned) => poisoned.into_inner(),
        };
        match step {
            SdkBuild::Started => {
                *running = Some(Spinner::start(
                    "building the guest SDK for wasm32-wasip2 (once per toolchain)",
                    plain,
                ));
            }
            SdkBuild::Done | SdkBuild::Failed => {
                if let Some(spinner) = running.take() {
                    spinner.finish(if step == SdkBuild::Done {
                        "done"
                    } else {
                        "failed"
                    });
                }
            }
        }
    }))
}
