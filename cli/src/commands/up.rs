//! `haswarmctl up`: the one-command start. An embedded daemon (store, API,
//! reconcilers) runs in this process; the manifests are applied through its
//! API like any client would; progress is shown until everything is Ready;
//! then it keeps reconciling until Ctrl-C.

use std::time::{Duration, Instant};

use haswarm_controller::client::{Client, Endpoint};
use haswarm_controller::config::{default_socket, LogFormat, Settings};
use haswarm_controller::server;
use serde_json::Value;

use super::{apply, timeout};
use crate::cli::UpArgs;
use crate::exit::ExitCode;
use crate::output;
use crate::report;

/// One line per resource: kind/name, Ready, reason, message.
fn progress(objects: &[(String, Value)]) -> Vec<String> {
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
            let state = match g("status") {
                "True" => "Ready",
                "" => "waiting for the controller",
                _ => g("reason"),
            };
            let msg = g("message");
            if msg.is_empty() || g("status") == "True" {
                format!("{kind}/{name}: {state}")
            } else {
                format!("{kind}/{name}: {state}: {msg}")
            }
        })
        .collect()
}

async fn snapshot(client: &Client) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for k in haswarm_crds::KINDS.iter() {
        if let Ok(list) = client.list(k.plural, None).await {
            out.extend(list.items.into_iter().map(|o| (k.singular(), o)));
        }
    }
    out
}

fn all_ready(objects: &[(String, Value)]) -> bool {
    objects.iter().all(|(_, o)| {
        output::condition(o, "Ready")
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True")
    })
}

async fn watch_progress(client: &Client, limit: Duration) {
    let started = Instant::now();
    let mut last: Vec<String> = Vec::new();
    loop {
        let objects = snapshot(client).await;
        let lines = progress(&objects);
        if lines != last {
            // Plain lines, printed only when something changed: readable in a
            // terminal and in a log file alike.
            for l in lines.iter().filter(|l| !last.contains(l)) {
                println!("  {l}");
            }
            last = lines;
        }
        if all_ready(&objects) {
            println!(
                "all {} resources are Ready; reconciling in the foreground (Ctrl-C to stop)",
                objects.len()
            );
            return;
        }
        if started.elapsed() > limit {
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
