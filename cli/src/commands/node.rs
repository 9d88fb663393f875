//! `haswarmctl node ls | drain NODE | uncordon NODE`: Swarm nodes with the
//! members haswarm pinned to them, and a drain that hands leaders and
//! masters over before their members move (a bare `docker node update
//! --availability drain` stops them first, so they fail over instead).

use haswarm_controller::api::types::{NodeView, API_PREFIX};
use haswarm_controller::client::Method;

use super::{failed, timeout, Conn};
use crate::cli::{NodeCommand, NodeDrainArgs};
use crate::exit::ExitCode;
use crate::output::table;
use crate::report;

pub async fn run(conn: &Conn, command: &NodeCommand) -> ExitCode {
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command {
        NodeCommand::Ls => match client
            .call::<Vec<NodeView>>(Method::GET, &format!("{API_PREFIX}/nodes"), None::<&()>)
            .await
        {
            Ok(nodes) => {
                print!("{}", nodes_table(&nodes));
                ExitCode::Success
            }
            Err(e) => failed(&e),
        },
        NodeCommand::Drain(args) => drain(&client, args).await,
        NodeCommand::Uncordon { node } => {
            let path = format!("{API_PREFIX}/nodes/{node}/uncordon");
            match client
                .call::<NodeView>(Method::POST, &path, None::<&()>)
                .await
            {
                Ok(n) => {
                    println!(
                        "node/{} uncordoned: availability {}",
                        n.name, n.availability
                    );
                    ExitCode::Success
                }
                Err(e) => failed(&e),
            }
        }
    }
}

/// Asks for the drain until the node holds no member and is drained,
/// saying which members remain whenever that changes.
async fn drain(client: &haswarm_controller::client::Client, args: &NodeDrainArgs) -> ExitCode {
    let limit = match timeout(&args.timeout) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let path = format!("{API_PREFIX}/nodes/{}/drain", args.node);
    let deadline = std::time::Instant::now() + limit;
    let mut said: Option<Vec<String>> = None;
    loop {
        let n = match client
            .call::<NodeView>(Method::POST, &path, None::<&()>)
            .await
        {
            Ok(n) => n,
            Err(e) => return failed(&e),
        };
        if n.members.is_empty() && n.availability == "drain" {
            println!("node/{} drained", n.name);
            return ExitCode::Success;
        }
        if said.as_ref() != Some(&n.members) {
            println!(
                "node/{}: waiting for {} to move: {}",
                n.name,
                n.members.len(),
                n.members.join(", ")
            );
            said = Some(n.members.clone());
        }
        if std::time::Instant::now() >= deadline {
            report::error(&format!(
                "timed out after {}s: node/{} still holds {} (haswarmctl describe on each says why; the drain goes on, haswarmctl node uncordon {} stops it)",
                limit.as_secs(),
                n.name,
                n.members.join(", "),
                n.name
            ));
            return ExitCode::Invalid;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn nodes_table(nodes: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.role.clone(),
                if n.ready { "Ready" } else { "Down" }.to_owned(),
                if n.draining {
                    format!("{} (draining)", n.availability)
                } else {
                    n.availability.clone()
                },
                n.members.len().to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "ROLE", "STATUS", "AVAILABILITY", "MEMBERS"],
        &rows,
    )
}
