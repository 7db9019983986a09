//! The benchmark's fleet: `count` fake nodes of 8 H100 GPUs (kwok is their
//! kubelet), in blocks of 32 and spines of 512, labelled so that only the
//! benchmark's pods land there. Created concurrently; nodes already there
//! from an earlier run are kept.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use phalanx::fleet::{FleetSpec, ready_and_untainted};
use tokio::time::Instant;

use crate::workload::FLEET_LABEL;

/// The fleet's node names, once all are Ready and untainted. Nodes of a
/// larger earlier fleet are left alone (deleting thousands of nodes takes
/// longer than a run); [`ready_count`] says how many the schedulers see.
pub async fn ensure(client: &Client, count: usize) -> Vec<String> {
    let text = format!(
        "apiVersion: phalanx.dev/v1alpha1\nkind: Fleet\npools:\n- name: tp\n  count: {count}\n  gpus: 8\n  \
         gpuProduct: NVIDIA-H100-80GB-HBM3\n  cpu: \"224\"\n  memory: 2Ti\n  labels: {{{FLEET_LABEL}: throughput}}\n  \
         domains:\n  - {{labels: [network.topology.nvidia.com/block], size: 32, prefix: tp-block}}\n  \
         - {{labels: [network.topology.nvidia.com/spine], size: 512, prefix: tp-spine}}\n"
    );
    let fleet = FleetSpec::parse(&text).unwrap_or_else(|(f, m)| panic!("benchmark fleet: {f}: {m}"));
    let api: Api<Node> = Api::all(client.clone());
    let wanted = fleet.nodes();
    let names: Vec<String> = wanted.iter().map(|n| n.name_any()).collect();
    // Sets: with 5,000 nodes, a list search per node is 25 million comparisons per poll.
    let wanted_names: HashSet<&str> = names.iter().map(String::as_str).collect();
    let existing: HashSet<String> = labelled(&api).await.iter().map(|n| n.name_any()).collect();
    let started = Instant::now();
    let missing: Vec<Node> = wanted.into_iter().filter(|n| !existing.contains(&n.name_any())).collect();
    eprintln!("[fleet] creating {} of {count} nodes", missing.len());
    futures::stream::iter(missing)
        .map(|n| {
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &n).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating the benchmark's nodes");
    loop {
        let nodes = labelled(&api).await;
        let ready =
            nodes.iter().filter(|n| wanted_names.contains(n.name_any().as_str()) && ready_and_untainted(n)).count();
        eprintln!("[fleet] {ready}/{count} nodes Ready after {:.0}s", started.elapsed().as_secs_f64());
        if ready >= count {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "the fleet was not Ready in 15 minutes");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    names
}

/// Deletes the fleet (the smoke's, on a cluster other tests share).
pub async fn remove(client: &Client) {
    let api: Api<Node> = Api::all(client.clone());
    let _ = api.delete_collection(&DeleteParams::default(), &ListParams::default().labels(FLEET_LABEL)).await;
}

async fn labelled(api: &Api<Node>) -> Vec<Node> {
    // From the API server's watch cache: cheap even for 5,000 nodes.
    api.list(&ListParams::default().labels(FLEET_LABEL).match_any()).await.expect("listing nodes").items
}

/// Labelled nodes Ready and untainted: the fleet the schedulers really see.
pub async fn ready_count(client: &Client) -> usize {
    labelled(&Api::all(client.clone())).await.iter().filter(|n| ready_and_untainted(n)).count()
}
