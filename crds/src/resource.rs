//! The generic resource envelope (`apiVersion`, `kind`, `metadata`, `spec`,
//! `status`) and the registry of kinds.

use std::fmt::Debug;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::meta::ObjectMeta;
use crate::validate::{Catalog, FieldError, Report};
use crate::{
    GitSourceSpec, PostgresClusterSpec, RedisSentinelGroupSpec, SharedVolumeSpec, API_VERSION,
};

/// What a spec type must say about its kind. Implemented by each `*Spec`.
pub trait Kind:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static
{
    /// The `kind` field, e.g. `PostgresCluster`.
    const KIND: &'static str;
    /// Lowercase plural, used in API paths and `haswarmctl get`.
    const PLURAL: &'static str;
    /// Short names accepted by the CLI.
    const SHORT_NAMES: &'static [&'static str];
    /// The status the controller writes.
    type Status: Clone
        + Debug
        + Default
        + PartialEq
        + Serialize
        + DeserializeOwned
        + JsonSchema
        + Send
        + Sync;

    /// Fills defaults that depend on other fields. Field-local defaults are
    /// applied by serde while parsing (see [`crate::defaults`]).
    fn apply_defaults(&mut self, meta: &ObjectMeta);

    /// Appends every broken rule of the spec to `report`.
    fn validate(&self, meta: &ObjectMeta, report: &mut Report, catalog: &dyn Catalog);
}

/// One resource of kind `S`: metadata, the desired state, and the observed state.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource<S: Kind> {
    /// Name, labels and store bookkeeping.
    pub metadata: ObjectMeta,
    /// Desired state, written by users.
    pub spec: S,
    /// Observed state, written by the controller only.
    pub status: Option<S::Status>,
}

impl<S: Kind> Resource<S> {
    /// A resource with the given metadata and spec and no status.
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Self {
            metadata,
            spec,
            status: None,
        }
    }

    /// Applies the defaults that depend on other fields.
    pub fn apply_defaults(&mut self) {
        self.spec.apply_defaults(&self.metadata);
    }

    /// Every broken rule, with field paths from the document root.
    pub fn validate(&self, catalog: &dyn Catalog) -> Vec<FieldError> {
        let mut report = Report::default();
        crate::validate::check_metadata(&mut report, &self.metadata);
        self.spec.validate(&self.metadata, &mut report, catalog);
        report.into_errors()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a, S: Kind> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a ObjectMeta,
    spec: &'a S,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<S::Status>,
}

impl<S: Kind> Serialize for Resource<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        WireOut {
            api_version: API_VERSION,
            kind: S::KIND,
            metadata: &self.metadata,
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(s)
    }
}

/// Accepts only [`API_VERSION`]; the error names what is accepted.
struct ApiVersionTag;

impl<'de> Deserialize<'de> for ApiVersionTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        if v == API_VERSION {
            Ok(Self)
        } else {
            Err(de::Error::custom(format!(
                "unsupported apiVersion {v:?}: this haswarm serves {API_VERSION:?}"
            )))
        }
    }
}

/// Accepts only `S::KIND`.
struct KindTag<S>(PhantomData<S>);

impl<'de, S: Kind> Deserialize<'de> for KindTag<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        if v == S::KIND {
            Ok(Self(PhantomData))
        } else {
            Err(de::Error::custom(format!(
                "kind {v:?} where {:?} was expected",
                S::KIND
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, bound = "S: Kind")]
struct WireIn<S: Kind> {
    #[allow(dead_code)]
    api_version: ApiVersionTag,
    #[allow(dead_code)]
    kind: KindTag<S>,
    metadata: ObjectMeta,
    spec: S,
    #[serde(default)]
    status: Option<S::Status>,
}

impl<'de, S: Kind> Deserialize<'de> for Resource<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::<S>::deserialize(d)?;
        Ok(Self {
            metadata: w.metadata,
            spec: w.spec,
            status: w.status,
        })
    }
}

impl<S: Kind> JsonSchema for Resource<S> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        S::KIND.into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let metadata = generator.subschema_for::<ObjectMeta>();
        let spec = generator.subschema_for::<S>();
        let status = generator.subschema_for::<S::Status>();
        schemars::json_schema!({
            "type": "object",
            "description": format!("A haswarm {} resource.", S::KIND),
            "properties": {
                "apiVersion": {"description": "API group and version.", "const": API_VERSION},
                "kind": {"description": "The resource kind.", "const": S::KIND},
                "metadata": metadata,
                "spec": spec,
                "status": status
            },
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": false
        })
    }
}

/// A resource of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyResource {
    /// A PostgresCluster.
    PostgresCluster(Box<Resource<PostgresClusterSpec>>),
    /// A RedisSentinelGroup.
    RedisSentinelGroup(Box<Resource<RedisSentinelGroupSpec>>),
    /// A SharedVolume.
    SharedVolume(Box<Resource<SharedVolumeSpec>>),
    GitSource(Box<Resource<GitSourceSpec>>),
}

/// The operations every kind supports, so [`AnyResource`] dispatches in one place.
trait DynResource {
    fn kind(&self) -> &'static str;
    fn metadata(&self) -> &ObjectMeta;
    fn apply_defaults(&mut self);
    fn validate(&self, catalog: &dyn Catalog) -> Vec<FieldError>;
    fn to_json(&self) -> serde_json::Value;
}

impl<S: Kind> DynResource for Resource<S> {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn apply_defaults(&mut self) {
        Resource::apply_defaults(self);
    }
    fn validate(&self, catalog: &dyn Catalog) -> Vec<FieldError> {
        Resource::validate(self, catalog)
    }
    fn to_json(&self) -> serde_json::Value {
        // Serializing our own types to a JSON value cannot fail: every map key is a string.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl AnyResource {
    fn as_dyn(&self) -> &dyn DynResource {
        match self {
            Self::PostgresCluster(r) => r.as_ref(),
            Self::RedisSentinelGroup(r) => r.as_ref(),
            Self::SharedVolume(r) => r.as_ref(),
            Self::GitSource(r) => r.as_ref(),
        }
    }

    fn as_dyn_mut(&mut self) -> &mut dyn DynResource {
        match self {
            Self::PostgresCluster(r) => r.as_mut(),
            Self::RedisSentinelGroup(r) => r.as_mut(),
            Self::SharedVolume(r) => r.as_mut(),
            Self::GitSource(r) => r.as_mut(),
        }
    }

    /// The kind, e.g. `PostgresCluster`.
    pub fn kind(&self) -> &'static str {
        self.as_dyn().kind()
    }

    /// The metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        self.as_dyn().metadata()
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_str()
    }

    /// Applies the defaults that depend on other fields.
    pub fn apply_defaults(&mut self) {
        self.as_dyn_mut().apply_defaults();
    }

    /// Every broken rule.
    pub fn validate(&self, catalog: &dyn Catalog) -> Vec<FieldError> {
        self.as_dyn().validate(catalog)
    }

    /// The resource as JSON, as the API and `-o json` show it.
    pub fn to_json(&self) -> serde_json::Value {
        self.as_dyn().to_json()
    }
}

type FromJson =
    fn(serde_json::Value) -> Result<AnyResource, serde_path_to_error::Error<serde_json::Error>>;

/// What the CLI and the API need to know about a kind without knowing its type.
#[derive(Debug)]
pub struct KindInfo {
    /// The `kind` field value.
    pub kind: &'static str,
    /// Lowercase plural.
    pub plural: &'static str,
    /// Short names.
    pub short_names: &'static [&'static str],
    /// Its JSON Schema (draft-07).
    pub schema: fn() -> schemars::Schema,
    /// Typed deserialization from JSON, reporting the failing field path.
    pub from_json: FromJson,
}

fn from_json<S: Kind>(
    value: serde_json::Value,
    wrap: fn(Box<Resource<S>>) -> AnyResource,
) -> Result<AnyResource, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize::<_, Resource<S>>(value).map(|r| wrap(Box::new(r)))
}

const fn info<S: Kind>(schema: fn() -> schemars::Schema, from_json: FromJson) -> KindInfo {
    KindInfo {
        kind: S::KIND,
        plural: S::PLURAL,
        short_names: S::SHORT_NAMES,
        schema,
        from_json,
    }
}

/// Every kind haswarm serves.
pub static KINDS: [KindInfo; 4] = [
    info::<PostgresClusterSpec>(crate::schema::schema_for::<PostgresClusterSpec>, |v| {
        from_json(v, AnyResource::PostgresCluster)
    }),
    info::<RedisSentinelGroupSpec>(crate::schema::schema_for::<RedisSentinelGroupSpec>, |v| {
        from_json(v, AnyResource::RedisSentinelGroup)
    }),
    info::<SharedVolumeSpec>(crate::schema::schema_for::<SharedVolumeSpec>, |v| {
        from_json(v, AnyResource::SharedVolume)
    }),
    info::<GitSourceSpec>(crate::schema::schema_for::<GitSourceSpec>, |v| {
        from_json(v, AnyResource::GitSource)
    }),
];

impl KindInfo {
    /// Finds a kind by its name, plural, singular or short name, in any case:
    /// `PostgresCluster`, `postgresclusters`, `postgrescluster`, `pgc`.
    pub fn lookup(name: &str) -> Option<&'static KindInfo> {
        let n = name.to_ascii_lowercase();
        KINDS.iter().find(|k| {
            k.kind.eq_ignore_ascii_case(&n) || k.plural == n || k.short_names.contains(&n.as_str())
        })
    }

    /// The singular lowercase name, e.g. `postgrescluster`.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }
}
