//! Reads from the cluster of the current kubeconfig (`KUBECONFIG`, or
//! `~/.kube/config`, or the in-cluster service account): the workloads and
//! NetworkPolicies `audit --cluster` judges, the Secrets `migrate --push
//! --cluster` copies.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, ObjectList};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::push::SecretData;
use crate::secret::SecretBytes;

/// A client for the current kubeconfig context.
///
/// # Errors
/// A message saying which kubeconfig could not be used.
pub async fn client() -> Result<Client, String> {
    Client::try_default().await.map_err(|e| format!("cannot reach the cluster of the current kubeconfig context: {e}"))
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Every object of one kind, page by page, as JSON (`apiVersion` and `kind`
/// set, `managedFields` dropped). Objects a controller owns are left out:
/// their owner's template is audited instead.
async fn list<K>(client: &Client, namespace: Option<&str>, out: &mut Vec<Value>) -> Result<(), String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = api(client, namespace);
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let mut params = ListParams::default().limit(500);
    loop {
        let page: ObjectList<K> = api.list(&params).await.map_err(|e| format!("listing {kind}s: {e}"))?;
        for item in &page.items {
            let owned = item.meta().owner_references.iter().flatten().any(|o| o.controller == Some(true));
            if owned {
                continue;
            }
            let mut v = serde_json::to_value(item).map_err(|e| format!("{kind}: {e}"))?;
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            out.push(v);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok(()),
        }
    }
}

/// The cluster's workloads (all namespaces, or `namespace`) and its
/// NetworkPolicies, as manifests.
///
/// # Errors
/// The first list that fails (permissions: `list` on each kind).
pub async fn workloads(client: &Client, namespace: Option<&str>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    list::<Pod>(client, namespace, &mut out).await?;
    list::<ReplicationController>(client, namespace, &mut out).await?;
    list::<Deployment>(client, namespace, &mut out).await?;
    list::<StatefulSet>(client, namespace, &mut out).await?;
    list::<DaemonSet>(client, namespace, &mut out).await?;
    list::<ReplicaSet>(client, namespace, &mut out).await?;
    list::<Job>(client, namespace, &mut out).await?;
    list::<CronJob>(client, namespace, &mut out).await?;
    list::<NetworkPolicy>(client, namespace, &mut out).await?;
    Ok(out)
}

/// The Secrets `wanted` (`namespace`, `name`) from the cluster; absent ones
/// are left out (the caller names them).
///
/// # Errors
/// A read that fails for another reason than absence (permissions: `get`
/// on Secrets in those namespaces).
pub async fn secrets(client: &Client, wanted: &[(String, String)]) -> Result<Vec<SecretData>, String> {
    let mut out = Vec::new();
    for (namespace, name) in wanted {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret =
            api.get_opt(name).await.map_err(|e| format!("reading Secret {namespace}/{name} from the cluster: {e}"))?;
        let Some(secret) = secret else { continue };
        let mut entries = BTreeMap::new();
        for (k, v) in secret.data.into_iter().flatten() {
            entries.insert(k, SecretBytes::new(v.0));
        }
        // stringData is write-only: the API server folds it into data.
        out.push(SecretData { namespace: namespace.clone(), name: name.clone(), entries });
    }
    Ok(out)
}
