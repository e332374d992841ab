//! An operator's catalog file (`--catalog`): products added to the built-in ones. Everything is checked
//! before the file can be installed, so a mistake stops the command at start with the product and
//! the field to fix, rather than turning into dead letters or unassignable policies later.
//!
//! ```json
//! {"products": [{"key": "power_automate_process", "displayName": "Power Automate Process",
//!   "skuId": "…", "skuPartNumber": "…", "autoclaimApp": "…",
//!   "servicePlans": [{"name": "…", "id": "…", "grants": ["premium_cloud_flows"]}]}]}
//! ```
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::{Capabilities, Catalog, Product, ServicePlan, MAX_PRODUCTS};
use crate::domain::ids;

/// Longest product key: it is part of record keys (`<tenantId>/<product>`) and metric labels.
const MAX_KEY_LEN: usize = 64;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read the catalog file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid catalog file: {0}")]
    Syntax(String),
    #[error("the catalog would hold {count} products ({built_in} built-in, {in_file} from the file); at most {MAX_PRODUCTS} fit")]
    TooManyProducts {
        count: usize,
        built_in: usize,
        in_file: usize,
    },
    #[error("product {product}: key {key:?} must be 1 to {MAX_KEY_LEN} lowercase letters, digits or '_'")]
    InvalidKey { product: String, key: String },
    #[error("product {product}: {field} is empty")]
    EmptyField { product: String, field: String },
    #[error(
        "product {product}: {field} {value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
    )]
    MalformedGuid {
        product: String,
        field: String,
        value: String,
    },
    #[error("product {product}: key is already the key of {other}")]
    DuplicateKey { product: String, other: String },
    #[error("product {product}: skuId {sku_id} is already the SKU of {other}")]
    DuplicateSkuId {
        product: String,
        sku_id: String,
        other: String,
    },
    #[error("product {product}: servicePlans[{index}].id {plan_id} is already the id of servicePlans[{first}]")]
    DuplicatePlanId {
        product: String,
        plan_id: String,
        index: usize,
        first: usize,
    },
    #[error("product {product}: service plan {plan} grants {name:?}, which is not a capability (known: premium_cloud_flows, attended_rpa)")]
    UnknownCapability {
        product: String,
        plan: String,
        name: String,
    },
    #[error("product {product}: none of its service plans grants a capability, so no claim could ever call for it")]
    GrantsNothing { product: String },
    #[error("a different catalog ({in_use} products) is already in use in this process; the catalog is installed once, at start, before anything reads it")]
    AlreadyInstalled { in_use: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContent {
    products: Vec<ProductEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProductEntry {
    key: String,
    display_name: String,
    sku_id: String,
    sku_part_number: String,
    autoclaim_app: String,
    service_plans: Vec<PlanEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    name: String,
    id: String,
    /// Capability names; absent for a plan that grants nothing autoclaim deals in.
    #[serde(default)]
    grants: Vec<String>,
}

/// A product of the file that passed every check, with what each of its plans grants.
#[derive(Debug)]
struct ValidProduct {
    entry: ProductEntry,
    plan_grants: Vec<Capabilities>,
}

/// The products of a catalog file, validated against each other and against the built-ins.
#[derive(Debug)]
pub struct CatalogFile {
    products: Vec<ValidProduct>,
}

impl CatalogFile {
    pub fn read(path: &Path) -> Result<CatalogFile, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        CatalogFile::parse(&text)
    }

    pub fn parse(text: &str) -> Result<CatalogFile, CatalogError> {
        let content: FileContent =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                .map_err(|e| CatalogError::Syntax(format!("at {}: {}", e.path(), e.inner())))?;
        let built_in = Catalog::built_in().len();
        let count = built_in + content.products.len();
        if count > MAX_PRODUCTS {
            return Err(CatalogError::TooManyProducts {
                count,
                built_in,
                in_file: content.products.len(),
            });
        }
        let mut products: Vec<ValidProduct> = Vec::with_capacity(content.products.len());
        for (index, entry) in content.products.into_iter().enumerate() {
            let product = validate(index, canonical_ids(entry))?;
            not_already_in(&products, &product)?;
            products.push(product);
        }
        Ok(CatalogFile { products })
    }

    /// The file's products, their strings leaked: a catalog lives as long as the process.
    pub(super) fn into_products(self) -> impl Iterator<Item = Product> {
        self.products.into_iter().map(leak)
    }
}

/// GUIDs in lowercase, as the built-ins have them, so that outputs name plans in one form.
fn canonical_ids(mut entry: ProductEntry) -> ProductEntry {
    entry.sku_id.make_ascii_lowercase();
    for plan in &mut entry.service_plans {
        plan.id.make_ascii_lowercase();
    }
    entry
}

/// How an error names a product: its key, or its place in the file when the key is what is wrong.
fn product_name(index: usize, key: &str) -> String {
    if key.is_empty() {
        format!("products[{index}]")
    } else {
        key.to_owned()
    }
}

fn validate(index: usize, entry: ProductEntry) -> Result<ValidProduct, CatalogError> {
    let product = product_name(index, &entry.key);
    check_key(&product, &entry.key)?;
    check_not_empty(&product, "displayName", &entry.display_name)?;
    check_not_empty(&product, "skuPartNumber", &entry.sku_part_number)?;
    check_not_empty(&product, "autoclaimApp", &entry.autoclaim_app)?;
    check_guid(&product, "skuId", &entry.sku_id)?;
    let mut plan_grants = Vec::with_capacity(entry.service_plans.len());
    for (i, plan) in entry.service_plans.iter().enumerate() {
        check_not_empty(&product, &format!("servicePlans[{i}].name"), &plan.name)?;
        check_guid(&product, &format!("servicePlans[{i}].id"), &plan.id)?;
        if let Some(first) = entry.service_plans[..i]
            .iter()
            .position(|p| p.id == plan.id)
        {
            return Err(CatalogError::DuplicatePlanId {
                product,
                plan_id: plan.id.clone(),
                index: i,
                first,
            });
        }
        plan_grants.push(grants_of(&product, plan)?);
    }
    if plan_grants.iter().all(|grants| grants.is_empty()) {
        return Err(CatalogError::GrantsNothing { product });
    }
    Ok(ValidProduct { entry, plan_grants })
}

fn check_key(product: &str, key: &str) -> Result<(), CatalogError> {
    let well_formed = (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(CatalogError::InvalidKey {
            product: product.to_owned(),
            key: key.to_owned(),
        })
    }
}

fn check_not_empty(product: &str, field: &str, value: &str) -> Result<(), CatalogError> {
    if value.trim().is_empty() {
        return Err(CatalogError::EmptyField {
            product: product.to_owned(),
            field: field.to_owned(),
        });
    }
    Ok(())
}

fn check_guid(product: &str, field: &str, value: &str) -> Result<(), CatalogError> {
    if ids::is_guid(value) {
        return Ok(());
    }
    Err(CatalogError::MalformedGuid {
        product: product.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
    })
}

fn grants_of(product: &str, plan: &PlanEntry) -> Result<Capabilities, CatalogError> {
    plan.grants
        .iter()
        .try_fold(Capabilities::NONE, |caps, name| {
            let granted =
                Capabilities::from_name(name).ok_or_else(|| CatalogError::UnknownCapability {
                    product: product.to_owned(),
                    plan: plan.name.clone(),
                    name: name.clone(),
                })?;
            Ok(caps.union(granted))
        })
}

/// A key or SKU names one product: neither may repeat a built-in's or an earlier product's.
fn not_already_in(earlier: &[ValidProduct], product: &ValidProduct) -> Result<(), CatalogError> {
    let built_in = Catalog::built_in()
        .iter()
        .map(|p| (p.key, p.sku_id, format!("the built-in product {}", p.key)));
    let in_file = earlier.iter().map(|p| {
        let entry = &p.entry;
        (entry.key.as_str(), entry.sku_id.as_str(), entry.key.clone())
    });
    let entry = &product.entry;
    for (key, sku_id, other) in built_in.chain(in_file) {
        if key == entry.key {
            return Err(CatalogError::DuplicateKey {
                product: entry.key.clone(),
                other,
            });
        }
        if sku_id.eq_ignore_ascii_case(&entry.sku_id) {
            return Err(CatalogError::DuplicateSkuId {
                product: entry.key.clone(),
                sku_id: entry.sku_id.clone(),
                other,
            });
        }
    }
    Ok(())
}

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak(product: ValidProduct) -> Product {
    let ValidProduct { entry, plan_grants } = product;
    let plans: Vec<ServicePlan> = entry
        .service_plans
        .into_iter()
        .zip(plan_grants)
        .map(|(plan, grants)| ServicePlan {
            name: leak_str(plan.name),
            id: leak_str(plan.id),
            grants,
        })
        .collect();
    Product {
        key: leak_str(entry.key),
        display_name: leak_str(entry.display_name),
        sku_part_number: leak_str(entry.sku_part_number),
        sku_id: leak_str(entry.sku_id),
        autoclaim_app: leak_str(entry.autoclaim_app),
        plans: Vec::leak(plans),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A valid file of one product that grants premium flows.
    pub const ONE_EXTRA: &str = r#"{"products": [{
        "key": "power_automate_process",
        "displayName": "Power Automate Process",
        "skuId": "0a2b4c6d-1e3f-4a5b-9c7d-8e9f0a1b2c3d",
        "skuPartNumber": "POWER_AUTOMATE_PROCESS",
        "autoclaimApp": "Power Automate Process",
        "servicePlans": [
            {"name": "EXCHANGE_S_FOUNDATION", "id": "113feb6c-3fe4-4440-bddc-54d774bf0318"},
            {"name": "FLOW_PROCESS", "id": "1b3d5f7a-2c4e-4b6d-8f1a-3c5e7a9b1d2f", "grants": ["premium_cloud_flows"]}
        ]}]}"#;

    fn base() -> Value {
        serde_json::from_str(ONE_EXTRA).unwrap()
    }

    /// The error of the file `base()` becomes after `change`.
    fn error_of(change: impl FnOnce(&mut Value)) -> CatalogError {
        let mut file = base();
        change(&mut file);
        CatalogFile::parse(&file.to_string()).unwrap_err()
    }

    fn product(file: &mut Value) -> &mut Value {
        &mut file["products"][0]
    }

    fn second_product(file: &mut Value, change: impl FnOnce(&mut Value)) {
        let mut copy = file["products"][0].clone();
        copy["key"] = json!("second");
        copy["skuId"] = json!("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a");
        change(&mut copy);
        file["products"].as_array_mut().unwrap().push(copy);
    }

    #[test]
    fn a_valid_file_extends_the_built_ins() {
        let file = CatalogFile::parse(ONE_EXTRA).unwrap();
        let products: Vec<Product> = file.into_products().collect();
        assert_eq!(products.len(), 1);
        assert_eq!(products[0].key, "power_automate_process");
        assert_eq!(
            products[0].capabilities(),
            Capabilities::PREMIUM_CLOUD_FLOWS
        );
        assert_eq!(products[0].plans[0].grants, Capabilities::NONE);
    }

    #[test]
    fn guids_are_kept_in_lowercase() {
        let mut file = base();
        product(&mut file)["skuId"] = json!("0A2B4C6D-1E3F-4A5B-9C7D-8E9F0A1B2C3D");
        let products: Vec<Product> = CatalogFile::parse(&file.to_string())
            .unwrap()
            .into_products()
            .collect();
        assert_eq!(products[0].sku_id, "0a2b4c6d-1e3f-4a5b-9c7d-8e9f0a1b2c3d");
    }

    #[test]
    fn a_duplicate_sku_id_is_refused() {
        let err = error_of(|f| {
            product(f)["skuId"] = json!("EDA1941C-3C4F-4995-B5EB-E85A42175AB9");
        });
        assert!(
            matches!(&err, CatalogError::DuplicateSkuId { product, other, .. }
                if product == "power_automate_process" && other.contains("power_automate_premium")),
            "{err}"
        );
        let err = error_of(|f| {
            second_product(f, |p| {
                p["skuId"] = json!("0a2b4c6d-1e3f-4a5b-9c7d-8e9f0a1b2c3d")
            })
        });
        assert!(
            matches!(&err, CatalogError::DuplicateSkuId { product, other, .. }
                if product == "second" && other == "power_automate_process"),
            "{err}"
        );
    }

    #[test]
    fn a_duplicate_key_is_refused() {
        let err = error_of(|f| product(f)["key"] = json!("power_automate_per_user"));
        assert!(
            matches!(&err, CatalogError::DuplicateKey { product, .. } if product == "power_automate_per_user"),
            "{err}"
        );
        let err = error_of(|f| second_product(f, |p| p["key"] = json!("power_automate_process")));
        assert!(
            matches!(&err, CatalogError::DuplicateKey { other, .. } if other == "power_automate_process"),
            "{err}"
        );
    }

    #[test]
    fn a_duplicate_plan_id_within_a_product_is_refused() {
        let err = error_of(|f| {
            product(f)["servicePlans"][1]["id"] = json!("113FEB6C-3FE4-4440-BDDC-54D774BF0318");
        });
        assert!(
            matches!(&err, CatalogError::DuplicatePlanId { product, index: 1, first: 0, .. }
                if product == "power_automate_process"),
            "{err}"
        );
        // The same plan in two products is normal (EXCHANGE_S_FOUNDATION is in both built-ins).
        let mut file = base();
        second_product(&mut file, |_| {});
        CatalogFile::parse(&file.to_string()).unwrap();
    }

    #[test]
    fn an_unknown_capability_is_refused() {
        let err = error_of(|f| {
            product(f)["servicePlans"][1]["grants"] =
                json!(["premium_cloud_flows", "unattended_rpa"]);
        });
        assert!(
            matches!(&err, CatalogError::UnknownCapability { product, plan, name }
                if product == "power_automate_process" && plan == "FLOW_PROCESS" && name == "unattended_rpa"),
            "{err}"
        );
    }

    #[test]
    fn a_product_granting_nothing_is_refused() {
        let err = error_of(|f| product(f)["servicePlans"][1]["grants"] = json!([]));
        assert!(
            matches!(&err, CatalogError::GrantsNothing { product } if product == "power_automate_process"),
            "{err}"
        );
        let err = error_of(|f| product(f)["servicePlans"] = json!([]));
        assert!(matches!(err, CatalogError::GrantsNothing { .. }), "{err}");
    }

    #[test]
    fn a_malformed_guid_is_refused() {
        let err = error_of(|f| product(f)["skuId"] = json!("not-a-guid"));
        assert!(
            matches!(&err, CatalogError::MalformedGuid { product, field, value }
                if product == "power_automate_process" && field == "skuId" && value == "not-a-guid"),
            "{err}"
        );
        let err = error_of(|f| {
            product(f)["servicePlans"][0]["id"] = json!("{113feb6c-3fe4-4440-bddc-54d774bf0318}");
        });
        assert!(
            matches!(&err, CatalogError::MalformedGuid { field, .. } if field == "servicePlans[0].id"),
            "{err}"
        );
    }

    #[test]
    fn more_products_than_a_product_set_holds_are_refused() {
        let fits = MAX_PRODUCTS - Catalog::built_in().len();
        let file_of = |n: usize| {
            let mut file = base();
            let template = file["products"][0].clone();
            file["products"] = (0..n)
                .map(|i| {
                    let mut p = template.clone();
                    p["key"] = json!(format!("product_{i}"));
                    p["skuId"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
                    p
                })
                .collect();
            file.to_string()
        };
        assert_eq!(
            CatalogFile::parse(&file_of(fits))
                .unwrap()
                .into_products()
                .count(),
            fits
        );
        let err = CatalogFile::parse(&file_of(fits + 1)).unwrap_err();
        assert!(
            matches!(err, CatalogError::TooManyProducts { count, .. } if count == MAX_PRODUCTS + 1),
            "{err}"
        );
    }

    #[test]
    fn keys_and_required_fields_are_checked() {
        let err = error_of(|f| product(f)["key"] = json!("Power Automate"));
        assert!(matches!(err, CatalogError::InvalidKey { .. }), "{err}");
        let err = error_of(|f| product(f)["key"] = json!(""));
        assert!(
            matches!(&err, CatalogError::InvalidKey { product, .. } if product == "products[0]"),
            "{err}"
        );
        let err = error_of(|f| product(f)["displayName"] = json!(" "));
        assert!(
            matches!(&err, CatalogError::EmptyField { field, .. } if field == "displayName"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = error_of(|f| product(f)["servicePlans"][0]["grant"] = json!([]));
        let message = err.to_string();
        assert!(matches!(err, CatalogError::Syntax(_)), "{message}");
        assert!(message.contains("products[0].servicePlans[0]"), "{message}");
        assert!(matches!(
            CatalogFile::parse("{"),
            Err(CatalogError::Syntax(_))
        ));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = CatalogFile::read(Path::new("/nonexistent/catalog.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/catalog.json"),
            "{err}"
        );
    }
}
