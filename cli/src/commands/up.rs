//! `haswarmctl up`: the one-command start. An embedded daemon (store, API,
//! reconcilers) runs in this process; the manifests are applied through its
//! API like any client would; progress is shown until everything is Ready;
//! then it keeps reconciling until Ctrl-C.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use haswarm_controller::client::{Client, Endpoint};
use haswarm_controller::config::{default_socket, LogFormat, Settings};
use haswarm_controller::server;
use haswarm_crds::KindInfo;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{apply, timeout};
use crate::cli::UpArgs;
use crate::exit::ExitCode;
use crate::output;
use crate::report;

/// One resource's progress: `kind/name`, what it waits for, and whether it
/// is Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    key: String,
    state: String,
    ready: bool,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.state)
    }
}

/// One line per resource: kind/name, then Ready, or its `Ready` condition's
/// reason and message. Pure.
fn progress(objects: &[(&'static KindInfo, Value)]) -> Vec<Line> {
    objects
        .iter()
        .map(|(kind, o)| {
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let c = output::condition(o, "Ready");
            let g = |k: &str| {
                c.and_then(|c| c.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            };
            let ready = g("status") == "True";
            let state = match (g("status"), g("message")) {
                ("True", _) => "Ready".to_owned(),
                ("", _) => "waiting for the controller".to_owned(),
                (_, "") => g("reason").to_owned(),
                (_, msg) => format!("{}: {msg}", g("reason")),
            };
            Line {
                key: format!("{}/{name}", kind.singular()),
                state,
                ready,
            }
        })
        .collect()
}

async fn snapshot(client: &Client) -> Vec<(&'static KindInfo, Value)> {
    let mut out = Vec::new();
    for k in haswarm_crds::KINDS.iter() {
        if let Ok(list) = client.list(k.plural, None).await {
            out.extend(list.items.into_iter().map(|o| (k, o)));
        }
    }
    out
}

/// How progress is shown: on a terminal, one live line per resource (a
/// spinner until it is Ready); otherwise plain lines, printed only when a
/// resource's line changes, readable in a log file.
enum Display {
    Live {
        bars: MultiProgress,
        lines: BTreeMap<String, ProgressBar>,
    },
    Plain {
        last: Vec<Line>,
    },
}

impl Display {
    fn new() -> Self {
        if std::io::stdout().is_terminal() {
            Self::Live {
                bars: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                lines: BTreeMap::new(),
            }
        } else {
            Self::Plain { last: Vec::new() }
        }
    }

    fn show(&mut self, lines: Vec<Line>) {
        match self {
            Self::Plain { last } => {
                for l in lines.iter().filter(|l| !last.contains(l)) {
                    println!("  {l}");
                }
                *last = lines;
            }
            Self::Live { bars, lines: shown } => {
                for l in lines {
                    let bar = shown.entry(l.key.clone()).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new_spinner());
                        let style = ProgressStyle::with_template(
                            "  {spinner} {prefix}: {wide_msg} {elapsed:>4}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                        bar.set_style(style);
                        bar.set_prefix(l.key.clone());
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    });
                    if l.ready && !bar.is_finished() {
                        bar.finish_with_message("Ready");
                    } else if !l.ready {
                        bar.set_message(l.state);
                    }
                }
            }
        }
    }

    /// Stops the spinners where they are, leaving each resource's last line.
    fn stop(&self) {
        if let Self::Live { lines, .. } = self {
            lines.values().for_each(ProgressBar::abandon);
        }
    }
}

/// How applications connect to each resource that serves them (what `get
/// -o env` prints), once all are Ready.
fn connection(objects: &[(&'static KindInfo, Value)]) -> String {
    objects
        .iter()
        .filter(|(k, _)| matches!(k.kind, "PostgresCluster" | "RedisSentinelGroup"))
        .map(|(k, o)| output::app_env(k, o))
        .collect::<Vec<_>>()
        .join("\n")
}

fn all_ready(objects: &[(&'static KindInfo, Value)]) -> bool {
    progress(objects).iter().all(|l| l.ready)
}

async fn watch_progress(client: &Client, limit: Duration) {
    let started = Instant::now();
    let mut display = Display::new();
    loop {
        let objects = snapshot(client).await;
        display.show(progress(&objects));
        if all_ready(&objects) {
            println!(
                "all {} resources are Ready in {:.0} s. Applications connect with:\n",
                objects.len(),
                started.elapsed().as_secs_f64()
            );
            println!("{}", connection(&objects));
            println!("haswarm keeps reconciling in the foreground (Ctrl-C to stop)");
            return;
        }
        if started.elapsed() > limit {
            display.stop();
            report::error(&format!(
                "not everything is Ready after {limit:?}; still reconciling (see `haswarmctl describe`). Ctrl-C to stop"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn run(args: &UpArgs) -> ExitCode {
    let limit = match timeout(&args.timeout) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let settings = Settings {
        data_dir: args.data_dir.clone(),
        socket: socket.clone(),
        tcp: None,
        log_format: LogFormat::Text,
        controllers: Some(haswarm_controller::runtime::Settings {
            probe_image: args.probe_image.clone(),
            git_cache: args.data_dir.join("git"),
            ..Default::default()
        }),
        // The store stays in the folder: a mirror needs a key kept in a
        // Swarm secret, which only an installed haswarmd has mounted.
        mirror: None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::Refused;
        }
    };
    let data_dir = args.data_dir.display().to_string();
    let input = crate::cli::FileArgs {
        files: args.input.files.clone(),
        recursive: args.input.recursive,
    };
    rt.block_on(async move {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            println!("stopping (the Swarm services keep running; `haswarmctl up` again resumes)");
        };
        let server = tokio::spawn(server::serve(settings, shutdown, move |started| {
            println!(
                "haswarm is running: store {data_dir}, API unix://{}",
                started.socket.display()
            );
            let _ = ready_tx.send(());
        }));
        if ready_rx.await.is_err() {
            return match server.await {
                Ok(Err(e)) => {
                    report::error(&e.to_string());
                    ExitCode::Refused
                }
                _ => ExitCode::Refused,
            };
        }
        let client = Client::new(Endpoint::Unix(socket));
        let code = apply::apply_with(&client, &input, false).await;
        if code != ExitCode::Success {
            return code;
        }
        watch_progress(&client, limit).await;
        match server.await {
            Ok(Ok(())) => ExitCode::Success,
            Ok(Err(e)) => {
                report::error(&e.to_string());
                ExitCode::Refused
            }
            Err(e) => {
                report::error(&format!("the embedded daemon failed: {e}"));
                ExitCode::Refused
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, ready: Option<(&str, &str, &str)>) -> Value {
        let conditions: Vec<Value> = ready
            .map(|(status, reason, message)| {
                serde_json::json!({"type": "Ready", "status": status, "reason": reason, "message": message})
            })
            .into_iter()
            .collect();
        serde_json::json!({"metadata": {"name": name}, "status": {"conditions": conditions}})
    }

    #[test]
    fn each_resource_s_line_says_what_it_waits_for() {
        let rsg = KindInfo::lookup("rsg").expect("rsg");
        let objects = vec![
            (rsg, obj("new", None)),
            (rsg, obj("up", Some(("True", "Healthy", "all good")))),
            (rsg, obj("starting", Some(("False", "MasterDown", "")))),
            (
                rsg,
                obj(
                    "waiting",
                    Some(("False", "NotReady", "cache-redis-1 is not connected yet")),
                ),
            ),
        ];
        let lines: Vec<String> = progress(&objects).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "redissentinelgroup/new: waiting for the controller",
                "redissentinelgroup/up: Ready",
                "redissentinelgroup/starting: MasterDown",
                "redissentinelgroup/waiting: NotReady: cache-redis-1 is not connected yet",
            ]
        );
        assert!(!all_ready(&objects));
        assert!(all_ready(&objects[1..2]));
    }
}
