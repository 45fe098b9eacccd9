//! Gateway API status, written by the leader after each build (the conditions come from the
//! model: [`GatewayApiStatus`]).
//!
//! - GatewayClass and Gateway status are ours alone: written whole, with a JSON merge patch on
//!   the `status` subresource. A Gateway's `addresses` are the ones Ingress status gets
//!   (`--publish-service` / `--publish-status-address`).
//! - A route's `status.parents` is shared with every controller its `parentRefs` name: the
//!   route is read first, the entries of other controllers kept, ours replaced, and the patch
//!   carries the resourceVersion it was read at, so a concurrent writer makes the API server
//!   refuse it (409) rather than lose their entry; it is retried after the next build.
//!
//! A route that stops naming a Gateway of ours has our entries taken off its `status.parents`
//! (read, filtered, patched the same way).
//!
//! `observedGeneration` is the object's `metadata.generation` the build saw, and a condition's
//! `lastTransitionTime` changes only when its status does. What was written is remembered so
//! that an unchanged status is not written again; a new leader starts afresh and writes
//! everything once.

use std::collections::HashMap;

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::gateway_api::{self, GRPCRoute, Gateway, GatewayClass, HTTPRoute, TLSRoute};
use crate::model::{Condition, GatewayApiStatus, RouteStatus, SUPPORTED_FEATURES};

/// Field manager of our status patches.
const FIELD_MANAGER: &str = "portcullis";

/// (kind, namespace, name) of a written object.
type Key = (String, String, String);

/// What one publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) patched: usize,
    pub(crate) failed: usize,
}

/// Remembers what was written, to write only what changed.
pub(crate) struct GatewayStatusWriter {
    client: Client,
    /// The status last written to each object (conditions with their transition times).
    written: HashMap<Key, Value>,
}

impl GatewayStatusWriter {
    pub(crate) fn new(client: Client) -> GatewayStatusWriter {
        GatewayStatusWriter {
            client,
            written: HashMap::new(),
        }
    }

    /// Forgets what was written: a later leadership writes everything once.
    pub(crate) fn reset(&mut self) {
        self.written.clear();
    }

    /// Writes the status of every object in `status` that differs from what was last written.
    pub(crate) async fn publish(
        &mut self,
        status: &GatewayApiStatus,
        addresses: &[IngressLoadBalancerIngress],
    ) -> Written {
        let mut done = Written::default();
        // Whole seconds, as `metav1.Time` keeps them.
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for class in &status.classes {
            let key = (
                "GatewayClass".to_string(),
                String::new(),
                class.name.clone(),
            );
            let desired = json!({
                "conditions": conditions(&class.conditions, class.generation, self.written.get(&key), &now),
                "supportedFeatures": SUPPORTED_FEATURES
                    .iter()
                    .map(|name| json!({ "name": name }))
                    .collect::<Vec<_>>(),
            });
            if self.unchanged(&key, &desired) {
                continue;
            }
            let api: Api<GatewayClass> = Api::all(self.client.clone());
            let patch = |status: &Value| Patch::Merge(json!({ "status": status }));
            let mut result = api
                .patch_status(&class.name, &params(), &patch(&desired))
                .await;
            if result.is_err() {
                // CRDs older than v1.2 have no `supportedFeatures` of this shape (or none):
                // the conditions alone, rather than no status at all.
                let mut bare = desired.clone();
                if let Some(fields) = bare.as_object_mut() {
                    fields.remove("supportedFeatures");
                }
                result = api
                    .patch_status(&class.name, &params(), &patch(&bare))
                    .await;
            }
            self.settle(key, desired, result.map(drop), &mut done);
        }
        for gateway in &status.gateways {
            let key = (
                "Gateway".to_string(),
                gateway.namespace.clone(),
                gateway.name.clone(),
            );
            let previous = self.written.get(&key);
            let listeners: Vec<Value> = gateway
                .listeners
                .iter()
                .map(|l| {
                    let before = previous
                        .and_then(|p| p["listeners"].as_array())
                        .and_then(|ls| ls.iter().find(|x| x["name"] == l.name.as_str()));
                    json!({
                        "name": l.name,
                        "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": gateway_api::GROUP, "kind": k})).collect::<Vec<_>>(),
                        "attachedRoutes": l.attached_routes,
                        "conditions": conditions(&l.conditions, gateway.generation, before, &now),
                    })
                })
                .collect();
            let desired = json!({
                "addresses": gateway_addresses(addresses),
                "conditions": conditions(&gateway.conditions, gateway.generation, previous, &now),
                "listeners": listeners,
            });
            if self.unchanged(&key, &desired) {
                continue;
            }
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &gateway.namespace);
            let result = api
                .patch_status(
                    &gateway.name,
                    &params(),
                    &Patch::Merge(json!({ "status": desired })),
                )
                .await;
            self.settle(key, desired, result.map(drop), &mut done);
        }
        for route in &status.routes {
            self.publish_route(route, &now, &mut done).await;
        }
        // Routes we wrote that no longer name a Gateway of ours: our entries come off their
        // `status.parents`, the spec's rule for a parent the route left.
        let current: std::collections::HashSet<Key> = status
            .routes
            .iter()
            .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone()))
            .collect();
        let departed: Vec<Key> = self
            .written
            .keys()
            .filter(|key| key.0.ends_with("Route") && !current.contains(*key))
            .cloned()
            .collect();
        for key in departed {
            self.clear_route(key, &mut done).await;
        }
        done
    }

    /// Takes our entries off route `key`'s `status.parents` (read first, patched at the
    /// resourceVersion read, other controllers' entries kept). A route that is gone is
    /// forgotten.
    async fn clear_route(&mut self, key: Key, done: &mut Written) {
        let (kind, namespace, name) = &key;
        let api = route_api(&self.client, kind, namespace);
        let current = match api.get_status(name).await {
            Ok(current) => current,
            Err(kube::Error::Api(response)) if response.code == 404 => {
                self.written.remove(&key);
                return;
            }
            Err(error) => {
                tracing::warn!(%kind, %namespace, %name, %error, "reading route status failed; retrying after the next build");
                done.failed += 1;
                return;
            }
        };
        let parents: Vec<Value> = current
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let kept: Vec<Value> = parents
            .iter()
            .filter(|p| p["controllerName"] != gateway_api::CONTROLLER_NAME)
            .cloned()
            .collect();
        if kept.len() == parents.len() {
            self.written.remove(&key);
            return;
        }
        let patch = json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "status": { "parents": kept },
        });
        match api
            .patch_status(name, &params(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                done.patched += 1;
                self.written.remove(&key);
            }
            Err(error) => {
                done.failed += 1;
                tracing::warn!(%kind, %namespace, %name, %error, "clearing our route status failed; retrying after the next build");
            }
        }
    }

    async fn publish_route(&mut self, route: &RouteStatus, now: &str, done: &mut Written) {
        let key = (
            route.kind.clone(),
            route.namespace.clone(),
            route.name.clone(),
        );
        let previous = self.written.get(&key);
        let ours: Vec<Value> = route
            .parents
            .iter()
            .map(|parent| {
                let before = previous.and_then(|p| p.as_array()).and_then(|ps| {
                    ps.iter().find(|x| {
                        serde_json::to_value(&parent.parent_ref).ok().as_ref()
                            == Some(&x["parentRef"])
                    })
                });
                json!({
                    "parentRef": parent.parent_ref,
                    "controllerName": gateway_api::CONTROLLER_NAME,
                    "conditions": conditions(&parent.conditions, route.generation, before, now),
                })
            })
            .collect();
        let desired = Value::Array(ours.clone());
        if self.unchanged(&key, &desired) {
            return;
        }
        let api = route_api(&self.client, &route.kind, &route.namespace);
        // Read, keep the other controllers' entries, replace ours.
        let current = match api.get_status(&route.name).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(route = %format!("{}/{}", route.namespace, route.name), kind = %route.kind, %error, "reading route status failed; retrying after the next build");
                done.failed += 1;
                return;
            }
        };
        let mut parents: Vec<Value> = current
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["controllerName"] != gateway_api::CONTROLLER_NAME)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        parents.extend(ours);
        let patch = json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "status": { "parents": parents },
        });
        let result = api
            .patch_status(&route.name, &params(), &Patch::Merge(patch))
            .await;
        self.settle(key, desired, result.map(drop), done);
    }

    /// Is `desired` what was last written, transition times aside?
    fn unchanged(&self, key: &Key, desired: &Value) -> bool {
        self.written
            .get(key)
            .is_some_and(|before| without_times(before) == without_times(desired))
    }

    fn settle(
        &mut self,
        key: Key,
        desired: Value,
        result: Result<(), kube::Error>,
        done: &mut Written,
    ) {
        match result {
            Ok(()) => {
                done.patched += 1;
                self.written.insert(key, desired);
            }
            Err(error) => {
                done.failed += 1;
                let (kind, namespace, name) = key;
                tracing::warn!(%kind, %namespace, %name, %error, "writing Gateway API status failed; retrying after the next build");
            }
        }
    }
}

/// The API of `kind` routes in `namespace`, read and written as raw objects (our types do
/// not hold `status`).
fn route_api(client: &Client, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "HTTPRoute" => ApiResource::erase::<HTTPRoute>(&()),
        "GRPCRoute" => ApiResource::erase::<GRPCRoute>(&()),
        _ => ApiResource::erase::<TLSRoute>(&()),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Conditions as the API wants them. A condition keeps the `lastTransitionTime` it had when
/// last written with the same status; otherwise it changes now.
fn conditions(
    conditions: &[Condition],
    generation: Option<i64>,
    previous: Option<&Value>,
    now: &str,
) -> Vec<Value> {
    let before = previous.and_then(|p| p["conditions"].as_array());
    conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = before
                .and_then(|b| {
                    b.iter()
                        .find(|x| x["type"] == c.kind.as_str() && x["status"] == status)
                })
                .and_then(|x| x["lastTransitionTime"].as_str())
                .unwrap_or(now);
            json!({
                "type": c.kind,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation.unwrap_or(0),
                "lastTransitionTime": since,
            })
        })
        .collect()
}

/// A Gateway's `status.addresses`: IPs as `IPAddress`, names as `Hostname`.
fn gateway_addresses(addresses: &[IngressLoadBalancerIngress]) -> Vec<Value> {
    addresses
        .iter()
        .filter_map(|a| match (&a.ip, &a.hostname) {
            (Some(ip), _) => Some(json!({"type": "IPAddress", "value": ip})),
            (None, Some(name)) => Some(json!({"type": "Hostname", "value": name})),
            (None, None) => None,
        })
        .collect()
}

/// `value` with every `lastTransitionTime` removed.
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transition_time_stays_while_the_status_does() {
        let c = |status| Condition {
            kind: "Accepted".into(),
            status,
            reason: "Accepted".into(),
            message: String::new(),
        };
        let first = json!({"conditions": conditions(&[c(true)], Some(1), None, "t1")});
        let same = conditions(&[c(true)], Some(2), Some(&first), "t2");
        assert_eq!(same[0]["lastTransitionTime"], "t1");
        assert_eq!(same[0]["observedGeneration"], 2);
        let flipped = conditions(&[c(false)], Some(2), Some(&first), "t2");
        assert_eq!(flipped[0]["lastTransitionTime"], "t2");
        assert_eq!(flipped[0]["status"], "False");
    }
}
