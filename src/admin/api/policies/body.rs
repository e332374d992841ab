//! The bodies of a POST (a new policy) and of a PATCH (the fields to change), parsed and checked
//! before anything is looked up; what needs the policy's newest version is checked in `write`.
use serde_json::{Map, Value};

use crate::admin::api::extract::{field, other_tenant, parse, ChangeBody};
use crate::admin::problem::{FieldError, Problem};
use crate::domain::time::Timestamp;
use crate::wire::convert::{to_wire_timestamp, MAX_POLICY_NAME_CHARS};
use crate::wire::pb;

const JSON: &[&str] = &["application/json"];
const JSON_OR_MERGE_PATCH: &[&str] = &["application/json", "application/merge-patch+json"];

/// A name as stored: trimmed, 1 to 64 characters, no control characters.
pub(super) fn policy_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(field(
            "name",
            format!("is required (1 to {MAX_POLICY_NAME_CHARS} characters)"),
        ));
    }
    if name.chars().count() > MAX_POLICY_NAME_CHARS {
        return Err(field(
            "name",
            format!("is over {MAX_POLICY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(field("name", "contains control characters"));
    }
    Ok(name.to_owned())
}

/// Backups must not repeat the primary (the catalog and the chain rules check the rest).
pub(super) fn backup_errors(policy: &pb::Policy) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !policy.product.is_empty() && policy.backup_products.contains(&policy.product) {
        errors.push(field(
            "backupProducts",
            format!(
                "{} is the primary product; a backup must be another product",
                policy.product
            ),
        ));
    }
    errors
}

/// The body of a POST: a policy without what the server sets, and with a valid name.
pub(in crate::admin::api) struct NewPolicy {
    request: pb::Policy,
    name: String,
}

impl ChangeBody for NewPolicy {
    const MEDIA_TYPES: &'static [&'static str] = JSON;

    fn check(body: &[u8], tenant: &str) -> Result<Self, Problem> {
        let request: pb::Policy = parse(body)?;
        let mut errors = Vec::from_iter(other_tenant(&request.tenant_id, tenant));
        for (name, set) in [
            ("policyId", !request.policy_id.is_empty()),
            ("createdAt", request.created_at.is_some()),
            ("changedAt", request.changed_at.is_some()),
            ("changedBy", !request.changed_by.is_empty()),
        ] {
            if set {
                errors.push(field(name, "is set by the server"));
            }
        }
        if request.deleted {
            errors.push(field("deleted", "a new policy cannot be deleted"));
        }
        let name = policy_name(&request.name).map_err(|e| errors.push(e)).ok();
        errors.extend(backup_errors(&request));
        match name {
            Some(name) if errors.is_empty() => Ok(NewPolicy { request, name }),
            _ => Err(Problem::invalid(errors)),
        }
    }
}

impl NewPolicy {
    /// The policy's first version, under a new id, created and changed `now` by `changed_by`.
    pub(super) fn first_version(
        self,
        tenant: &str,
        now: Timestamp,
        changed_by: &str,
    ) -> pb::Policy {
        pb::Policy {
            tenant_id: tenant.to_owned(),
            policy_id: uuid::Uuid::new_v4().to_string(),
            name: self.name,
            product: self.request.product,
            backup_products: self.request.backup_products,
            excluded_apps: self.request.excluded_apps,
            enabled: self.request.enabled,
            deleted: false,
            created_at: Some(to_wire_timestamp(now)),
            changed_at: Some(to_wire_timestamp(now)),
            changed_by: changed_by.to_owned(),
        }
    }
}

/// The fields a PATCH may change, by their JSON names (pbjson also reads the proto names).
const PATCHABLE: [(&str, &str); 5] = [
    ("name", "name"),
    ("product", "product"),
    ("backupProducts", "backup_products"),
    ("excludedApps", "excluded_apps"),
    ("enabled", "enabled"),
];
const SERVER_OWNED: [(&str, &str); 6] = [
    ("tenantId", "tenant_id"),
    ("policyId", "policy_id"),
    ("createdAt", "created_at"),
    ("changedAt", "changed_at"),
    ("changedBy", "changed_by"),
    ("deleted", "deleted"),
];

/// The body of a PATCH: which fields it changes (JSON names, in the body's order) and their values.
pub(in crate::admin::api) struct PolicyPatch {
    pub fields: Vec<&'static str>,
    values: pb::Policy,
}

impl ChangeBody for PolicyPatch {
    const MEDIA_TYPES: &'static [&'static str] = JSON_OR_MERGE_PATCH;

    fn check(body: &[u8], _tenant: &str) -> Result<Self, Problem> {
        let value: Value = parse(body)?;
        let Value::Object(object) = &value else {
            return Err(Problem::bad_request(
                "the body must be a JSON object of the fields to change",
            ));
        };
        let fields = patched_fields(object)?;
        // Decoded from the bytes, not from `value`: a JSON object keeps only the last of repeated
        // keys, and a repeated key is refused, as in POST and PUT.
        let values = parse(body)?;
        Ok(PolicyPatch { fields, values })
    }
}

/// The patchable fields the body names; 400 for a null or an unknown field, 422 for fields the
/// server sets, and 400 for a body that changes nothing.
fn patched_fields(object: &Map<String, Value>) -> Result<Vec<&'static str>, Problem> {
    let named = |table: &[(&'static str, &'static str)], key: &str| {
        table
            .iter()
            .find(|(json, proto)| key == *json || key == *proto)
            .map(|(json, _)| *json)
    };
    let mut errors = Vec::new();
    let mut present = Vec::new();
    for (key, value) in object {
        if let Some(json) = named(&PATCHABLE, key) {
            if value.is_null() {
                return Err(Problem::bad_request(format!(
                    "{json} is null: send the new value, or leave the field out"
                )));
            }
            present.push(json);
        } else if let Some(json) = named(&SERVER_OWNED, key) {
            let why = if json == "deleted" {
                "cannot be changed with PATCH: DELETE the policy"
            } else {
                "is set by the server"
            };
            errors.push(field(json, why));
        } else {
            return Err(Problem::bad_request(format!(
                "unknown field {:?}: a PATCH may change {}",
                key.chars().take(64).collect::<String>(),
                PATCHABLE.map(|(a, _)| a).join(", ")
            )));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    if present.is_empty() {
        return Err(Problem::bad_request(format!(
            "the body changes nothing: send some of {}",
            PATCHABLE.map(|(a, _)| a).join(", ")
        )));
    }
    Ok(present)
}

impl PolicyPatch {
    /// Sets the patched fields of `policy`; a name is checked here, once the policy is known to
    /// exist (422).
    pub(super) fn apply_to(&self, policy: &mut pb::Policy) -> Result<(), Problem> {
        for name in &self.fields {
            match *name {
                "name" => {
                    policy.name =
                        policy_name(&self.values.name).map_err(|e| Problem::invalid(vec![e]))?
                }
                "product" => policy.product = self.values.product.clone(),
                "backupProducts" => policy.backup_products = self.values.backup_products.clone(),
                "excludedApps" => policy.excluded_apps = self.values.excluded_apps.clone(),
                "enabled" => policy.enabled = self.values.enabled,
                _ => unreachable!("only patchable fields are present"),
            }
        }
        Ok(())
    }
}
