//! The test control plane behaves like a real cluster where roster relies on it: the
//! garbage collector removes owned objects, and namespaces can be deleted.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use libtest_mimic::Trial;
use serde_json::json;

use crate::harness::{DEADLINE, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("cluster::garbage_collector_removes_owned_objects", |ns| async move {
            let api = ns.api::<ConfigMap>();
            let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}}))?;
            let owner = api.create(&PostParams::default(), &owner).await?;
            let uid = owner.metadata.uid.context("owner has no uid")?;
            let child: ConfigMap = serde_json::from_value(json!({"metadata": {
                "name": "child",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "controller": true}]
            }}))?;
            let child_uid =
                api.create(&PostParams::default(), &child).await?.metadata.uid.unwrap_or_default();
            api.delete("owner", &DeleteParams::background()).await?;
            tokio::time::timeout(DEADLINE, await_condition(api, "child", conditions::is_deleted(&child_uid)))
                .await
                .context("the garbage collector did not delete the owned ConfigMap in time")??;
            Ok(())
        }),
        trial("cluster::namespaces_can_be_deleted", |ns| async move {
            let api = Api::<Namespace>::all(ns.client.clone());
            let name = format!("{}-x", ns.name);
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            let created = api.create(&PostParams::default(), &namespace).await?;
            let in_it: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": "c", "namespace": name}}))?;
            Api::<ConfigMap>::namespaced(ns.client.clone(), &name)
                .create(&PostParams::default(), &in_it)
                .await?;
            api.delete(&name, &DeleteParams::default()).await?;
            let uid = created.metadata.uid.unwrap_or_default();
            tokio::time::timeout(DEADLINE, await_condition(api, &name, conditions::is_deleted(&uid)))
                .await
                .context("the namespace controller did not finish deleting the namespace in time")??;
            Ok(())
        }),
    ]
}
