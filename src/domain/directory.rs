//! Directory users and what their licences grant.
use super::catalog::{Capabilities, Catalog, ProductSet};
use super::time::Timestamp;

/// A licence as the directory reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryLicense {
    pub sku_id: String,
    pub disabled_plan_ids: Vec<String>,
}

/// A validated directory snapshot of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    pub tenant_id: String,
    pub user_id: String,
    pub account_enabled: bool,
    pub guest: bool,
    pub usage_location: Option<String>,
    pub licenses: Vec<DirectoryLicense>,
    pub as_of: Timestamp,
}

/// The part of a directory user that decisions need, kept small because an instance holds one per
/// user of the tenants it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRow {
    /// Capabilities granted by the user's licences, with disabled plans taken into account.
    pub capabilities: Capabilities,
    /// Catalog products the user holds, whatever plans are disabled.
    pub holds: ProductSet,
    pub account_enabled: bool,
    pub guest: bool,
    pub has_usage_location: bool,
    pub as_of: Timestamp,
}

impl DirectoryUser {
    pub fn row(&self) -> UserRow {
        let mut capabilities = Capabilities::NONE;
        let mut holds = ProductSet::default();
        for licence in &self.licenses {
            // Licences outside the catalog grant none of the capabilities autoclaim deals in.
            let Some(product_id) = Catalog::by_sku_id(&licence.sku_id) else {
                continue;
            };
            // Straight from the plans, without collecting the disabled ones: a restore does this for
            // every user of the directory.
            let granted = Catalog::product(product_id)
                .plans
                .iter()
                .filter(|plan| {
                    !licence
                        .disabled_plan_ids
                        .iter()
                        .any(|id| plan.id.eq_ignore_ascii_case(id))
                })
                .fold(Capabilities::NONE, |caps, plan| caps.union(plan.grants));
            capabilities = capabilities.union(granted);
            holds.insert(product_id);
        }
        UserRow {
            capabilities,
            holds,
            account_enabled: self.account_enabled,
            guest: self.guest,
            has_usage_location: self.usage_location.is_some(),
            as_of: self.as_of,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(licenses: Vec<DirectoryLicense>) -> DirectoryUser {
        DirectoryUser {
            tenant_id: "t".into(),
            user_id: "u".into(),
            account_enabled: true,
            guest: false,
            usage_location: Some("US".into()),
            licenses,
            as_of: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn capabilities_from_licences_respect_disabled_plans() {
        let premium_sku = "eda1941c-3c4f-4995-b5eb-e85a42175ab9";
        let row = user(vec![DirectoryLicense {
            sku_id: premium_sku.into(),
            disabled_plan_ids: vec![],
        }])
        .row();
        assert!(row.capabilities.contains(Capabilities::ATTENDED_RPA));
        let row = user(vec![DirectoryLicense {
            sku_id: premium_sku.into(),
            disabled_plan_ids: vec!["375cd0ad-c407-49fd-866a-0bff4f8a9a4d".into()],
        }])
        .row();
        assert_eq!(row.capabilities, Capabilities::NONE);
        assert!(row
            .holds
            .contains(Catalog::by_key("power_automate_premium").unwrap()));
    }

    #[test]
    fn unknown_skus_grant_nothing() {
        let row = user(vec![DirectoryLicense {
            sku_id: "06ebc4ee-1bb5-47dd-8120-11324bc54e06".into(),
            disabled_plan_ids: vec![],
        }])
        .row();
        assert_eq!(row.capabilities, Capabilities::NONE);
    }
}
