//! PriorityClasses for one test, named after its env.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::{ENV_LABEL, TestEnv};

/// Cluster-scoped PriorityClasses named after the env, removed at the end.
pub struct Priorities {
    api: Api<PriorityClass>,
    names: Vec<String>,
}

impl Priorities {
    pub async fn create(env: &TestEnv, classes: &[(&str, i32, bool)]) -> Self {
        let api: Api<PriorityClass> = Api::all(env.client.clone());
        let mut names = Vec::new();
        for (name, value, never) in classes {
            let full = format!("{}-{name}", env.name);
            let mut class = json!({"metadata": {"name": full, "labels": {ENV_LABEL: env.name}}, "value": value});
            if *never {
                class["preemptionPolicy"] = json!("Never");
            }
            api.create(&PostParams::default(), &serde_json::from_value(class).unwrap()).await.unwrap();
            names.push(full);
        }
        Self { api, names }
    }

    pub async fn remove(self) {
        for name in self.names {
            let _ = self.api.delete(&name, &DeleteParams::default()).await;
        }
    }
}
