//! One typed view of a pod spec over its raw JSON: containers of every kind,
//! their env sources, mounts and the security fields they inherit from the
//! pod. The mutation, `audit`, `migrate`, `push` and the Pod Security checks
//! all read pods through it, so "which containers", "which env vars come from
//! a Secret" and "what runs as which UID" have one answer.
//!
//! It borrows the JSON rather than deserializing it into Kubernetes structs:
//! the webhook must keep fields it has never heard of, and the pod may be
//! anything a client sent (every accessor is total: a field of the wrong type
//! reads as absent).

use serde_json::{Map, Value};

/// Which list of the pod spec a container lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `spec.initContainers` (native sidecars included).
    Init,
    /// `spec.containers`.
    Regular,
    /// `spec.ephemeralContainers` (debug containers).
    Ephemeral,
}

impl Kind {
    /// The pod spec's key for this list.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Init => "initContainers",
            Kind::Regular => "containers",
            Kind::Ephemeral => "ephemeralContainers",
        }
    }
}

/// A pod spec: `spec` of a Pod or of a workload's pod template.
#[derive(Debug, Clone, Copy)]
pub struct PodSpec<'a> {
    spec: Option<&'a Map<String, Value>>,
}

impl<'a> PodSpec<'a> {
    /// The view of `spec` (anything but an object reads as an empty spec).
    pub fn new(spec: &'a Value) -> Self {
        PodSpec { spec: spec.as_object() }
    }

    /// The view of a spec object.
    pub fn of_map(spec: &'a Map<String, Value>) -> Self {
        PodSpec { spec: Some(spec) }
    }

    /// The spec of a pod template (`{metadata, spec}`).
    pub fn of_template(template: &'a Value) -> Self {
        PodSpec::new(template.get("spec").unwrap_or(&Value::Null))
    }

    /// A field of the spec.
    pub fn field(&self, key: &str) -> Option<&'a Value> {
        self.spec?.get(key)
    }

    /// Whether a boolean field is `true`.
    pub fn is_true(&self, key: &str) -> bool {
        self.field(key).and_then(Value::as_bool) == Some(true)
    }

    /// The pod-level `securityContext`, which containers inherit some fields of.
    pub fn security_context(&self) -> Option<&'a Value> {
        self.field("securityContext")
    }

    /// The pod's `fsGroup`.
    pub fn fs_group(&self) -> Option<i64> {
        self.security_context().and_then(|sc| sc.get("fsGroup")).and_then(Value::as_i64)
    }

    /// `serviceAccountName`, or `default` when unset or empty.
    pub fn service_account(&self) -> &'a str {
        self.field("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("default")
    }

    /// The raw list of one kind (empty when absent or not a list).
    pub fn list(&self, kind: Kind) -> &'a [Value] {
        self.field(kind.key()).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// The containers of the given kinds, in that order, each in list order.
    pub fn containers(&self, kinds: &'static [Kind]) -> impl Iterator<Item = Container<'a>> + use<'a> {
        let pod_sc = self.security_context();
        let this = *self;
        kinds.iter().flat_map(move |&kind| {
            this.list(kind).iter().enumerate().map(move |(index, raw)| Container { kind, index, raw, pod_sc })
        })
    }

    /// The container at `index` of the `kind` list.
    pub fn container(&self, kind: Kind, index: usize) -> Option<Container<'a>> {
        let raw = self.list(kind).get(index)?;
        Some(Container { kind, index, raw, pod_sc: self.security_context() })
    }

    /// The containers that run the app: init containers, then regular ones.
    pub fn app_containers(&self) -> impl Iterator<Item = Container<'a>> + use<'a> {
        self.containers(&[Kind::Init, Kind::Regular])
    }

    /// Every container, ephemeral ones last.
    pub fn all_containers(&self) -> impl Iterator<Item = Container<'a>> + use<'a> {
        self.containers(&[Kind::Init, Kind::Regular, Kind::Ephemeral])
    }

    /// The volumes, as `(name, raw)`.
    pub fn volumes(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + use<'a> {
        let list = self.field("volumes").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        list.iter().map(|v| (str_at(v, "name").unwrap_or(""), v))
    }
}

/// One container, with what it inherits from the pod.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// Its list.
    pub kind: Kind,
    /// Its index in that list.
    pub index: usize,
    /// Its JSON.
    pub raw: &'a Value,
    pod_sc: Option<&'a Value>,
}

impl<'a> Container<'a> {
    /// The view of a container alone, inheriting from `pod_sc`.
    pub fn new(raw: &'a Value, kind: Kind, pod_sc: Option<&'a Value>) -> Self {
        Container { kind, index: 0, raw, pod_sc }
    }

    /// Its name (empty when unset).
    pub fn name(&self) -> &'a str {
        str_at(self.raw, "name").unwrap_or("")
    }

    /// Its image (empty when unset).
    pub fn image(&self) -> &'a str {
        str_at(self.raw, "image").unwrap_or("")
    }

    /// A field of its own.
    pub fn field(&self, key: &str) -> Option<&'a Value> {
        self.raw.get(key)
    }

    /// The strings of `command` or `args`.
    pub fn strings(&self, key: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        list_at(self.raw, key).iter().filter_map(Value::as_str)
    }

    /// Whether it has a non-empty `command`.
    pub fn has_command(&self) -> bool {
        !list_at(self.raw, "command").is_empty()
    }

    /// Its env vars, in order.
    pub fn env(&self) -> impl Iterator<Item = EnvVar<'a>> + use<'a> {
        list_at(self.raw, "env").iter().enumerate().map(|(index, e)| EnvVar::new(index, e))
    }

    /// Its `envFrom` entries, in order.
    pub fn env_from(&self) -> impl Iterator<Item = EnvFrom<'a>> + use<'a> {
        list_at(self.raw, "envFrom").iter().enumerate().map(|(index, e)| EnvFrom::new(index, e))
    }

    /// The Kubernetes Secrets it reads through env (`secretKeyRef`,
    /// `envFrom.secretRef`), in order, with repeats.
    pub fn secrets_read(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let refs = self.env().filter_map(|e| match e.source {
            EnvSource::SecretKeyRef(r) => r.secret,
            _ => None,
        });
        let froms = self.env_from().filter_map(|e| match e.source {
            EnvFromSource::Secret { name, .. } => name,
            EnvFromSource::Other => None,
        });
        refs.chain(froms)
    }

    /// Its volume mounts, as `(volume, mountPath)` (empty strings when unset).
    pub fn volume_mounts(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        list_at(self.raw, "volumeMounts")
            .iter()
            .map(|m| (str_at(m, "name").unwrap_or(""), str_at(m, "mountPath").unwrap_or("")))
    }

    /// A field of its own `securityContext`.
    pub fn security(&self, key: &str) -> Option<&'a Value> {
        self.raw.get("securityContext").and_then(|sc| sc.get(key))
    }

    /// A `securityContext` field as it applies: the container's own, else
    /// the pod's (for the fields a container inherits: `runAsUser`,
    /// `runAsGroup`, `runAsNonRoot`, `seccompProfile`, …).
    pub fn inherited(&self, key: &str) -> Option<&'a Value> {
        self.security(key).or_else(|| self.pod_sc.and_then(|sc| sc.get(key)))
    }

    /// The UID it runs as, if the spec says so.
    pub fn run_as_user(&self) -> Option<i64> {
        self.inherited("runAsUser").and_then(Value::as_i64)
    }

    /// The GID it runs as, if the spec says so.
    pub fn run_as_group(&self) -> Option<i64> {
        self.inherited("runAsGroup").and_then(Value::as_i64)
    }
}

/// One entry of `env`.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar<'a> {
    /// Its index in `env`.
    pub index: usize,
    /// Its name (empty when unset).
    pub name: &'a str,
    /// Where its value comes from.
    pub source: EnvSource<'a>,
}

impl<'a> EnvVar<'a> {
    fn new(index: usize, e: &'a Value) -> Self {
        let name = str_at(e, "name").unwrap_or("");
        // Kubernetes allows `valueFrom` only with an empty `value`, so a
        // non-empty value is what the variable holds.
        let value = str_at(e, "value");
        let source = match (value, e.pointer("/valueFrom/secretKeyRef")) {
            (Some(v), _) if !v.is_empty() => EnvSource::Value(v),
            (_, Some(r)) => EnvSource::SecretKeyRef(SecretKeyRef {
                secret: str_at(r, "name"),
                key: str_at(r, "key"),
                optional: r.get("optional").and_then(Value::as_bool) == Some(true),
            }),
            (Some(v), None) => EnvSource::Value(v),
            (None, None) => EnvSource::Other,
        };
        EnvVar { index, name, source }
    }

    /// Its literal value, if it has one.
    pub fn value(&self) -> Option<&'a str> {
        match self.source {
            EnvSource::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Where an env var's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource<'a> {
    /// `value:` (possibly a sidekey reference, possibly empty).
    Value(&'a str),
    /// `valueFrom.secretKeyRef`.
    SecretKeyRef(SecretKeyRef<'a>),
    /// Anything else (`fieldRef`, `configMapKeyRef`, `resourceFieldRef`, nothing).
    Other,
}

/// A `secretKeyRef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretKeyRef<'a> {
    /// The Secret's name, when set.
    pub secret: Option<&'a str>,
    /// The key, when set.
    pub key: Option<&'a str>,
    /// `optional: true`.
    pub optional: bool,
}

/// One entry of `envFrom`.
#[derive(Debug, Clone, Copy)]
pub struct EnvFrom<'a> {
    /// Its index in `envFrom`.
    pub index: usize,
    /// What it reads.
    pub source: EnvFromSource<'a>,
}

impl<'a> EnvFrom<'a> {
    fn new(index: usize, e: &'a Value) -> Self {
        let source = match e.get("secretRef") {
            Some(r) => EnvFromSource::Secret {
                name: str_at(r, "name"),
                prefix: str_at(e, "prefix").unwrap_or(""),
                optional: r.get("optional").and_then(Value::as_bool) == Some(true),
            },
            None => EnvFromSource::Other,
        };
        EnvFrom { index, source }
    }
}

/// What an `envFrom` entry reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFromSource<'a> {
    /// `secretRef`: every key of a Secret.
    Secret {
        /// The Secret's name, when set.
        name: Option<&'a str>,
        /// The entry's `prefix` (empty when unset).
        prefix: &'a str,
        /// `optional: true`.
        optional: bool,
    },
    /// `configMapRef` or anything else.
    Other,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn list_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_every_kind_in_order_with_indexes() {
        let spec = json!({
            "initContainers": [{"name": "i0"}, {"name": "i1"}],
            "containers": [{"name": "c0"}],
            "ephemeralContainers": [{"name": "e0"}],
        });
        let pod = PodSpec::new(&spec);
        let app: Vec<(Kind, usize, &str)> = pod.app_containers().map(|c| (c.kind, c.index, c.name())).collect();
        assert_eq!(app, [(Kind::Init, 0, "i0"), (Kind::Init, 1, "i1"), (Kind::Regular, 0, "c0")]);
        assert_eq!(pod.all_containers().last().map(|c| c.name()), Some("e0"));
        assert_eq!(PodSpec::new(&json!("not a spec")).all_containers().count(), 0);
    }

    #[test]
    fn env_sources_follow_kubernetes_precedence() {
        let c = json!({"env": [
            {"name": "A", "value": "vault:secret/data/a#k"},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": true}}},
            {"name": "C", "value": "", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "E", "value": ""},
        ], "envFrom": [{"secretRef": {"name": "all"}, "prefix": "X_"}, {"configMapRef": {"name": "cm"}}]});
        let c = Container::new(&c, Kind::Regular, None);
        let sources: Vec<EnvSource> = c.env().map(|e| e.source).collect();
        assert_eq!(sources[0], EnvSource::Value("vault:secret/data/a#k"));
        assert_eq!(
            sources[1],
            EnvSource::SecretKeyRef(SecretKeyRef { secret: Some("db"), key: Some("pw"), optional: true })
        );
        assert!(matches!(sources[2], EnvSource::SecretKeyRef(SecretKeyRef { key: Some("user"), .. })));
        assert_eq!(sources[3], EnvSource::Other);
        assert_eq!(sources[4], EnvSource::Value(""));
        let froms: Vec<EnvFromSource> = c.env_from().map(|e| e.source).collect();
        assert_eq!(froms[0], EnvFromSource::Secret { name: Some("all"), prefix: "X_", optional: false });
        assert_eq!(froms[1], EnvFromSource::Other);
        assert_eq!(c.secrets_read().collect::<Vec<_>>(), ["db", "db", "all"]);
    }

    #[test]
    fn security_fields_are_inherited_from_the_pod_unless_set() {
        let spec = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
            "containers": [{"name": "a", "securityContext": {"runAsUser": 1001}}, {"name": "b"}]});
        let pod = PodSpec::new(&spec);
        let users: Vec<Option<i64>> = pod.app_containers().map(|c| c.run_as_user()).collect();
        assert_eq!(users, [Some(1001), Some(1000)]);
        assert!(pod.app_containers().all(|c| c.run_as_group() == Some(3000)));
        assert_eq!(pod.fs_group(), Some(2000));
        assert_eq!(pod.service_account(), "default");
    }
}
