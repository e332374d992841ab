//! Autoclaim policies: a primary product, up to four backups in order, and per product the apps
//! (service plans) left out of the assignment.
use thiserror::Error;

use super::catalog::{Capabilities, Catalog, PlanIndex, ProductId};
use super::time::Timestamp;

pub const MAX_BACKUP_PRODUCTS: usize = 4;

/// One product of a policy's chain, with the plans the policy disables in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    pub product: ProductId,
    /// Sorted plan indexes within the product.
    pub disabled_plans: Vec<PlanIndex>,
    /// What the product grants with those plans disabled.
    pub grants: Capabilities,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub policy_id: String,
    pub name: String,
    /// Primary product first, then the backups in order.
    pub chain: Vec<ChainLink>,
    pub enabled: bool,
    pub deleted: bool,
    pub created_at: Timestamp,
    pub changed_at: Timestamp,
    pub changed_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("a policy may have at most {MAX_BACKUP_PRODUCTS} backup products, got {0}")]
    TooManyBackups(usize),
    #[error("product {0} appears more than once in the policy's products")]
    RepeatedProduct(&'static str),
    #[error("excluded apps name product {0}, which is not one of the policy's products")]
    ExclusionForOtherProduct(&'static str),
    #[error("plan {plan} is not a plan of product {product}")]
    UnknownPlan { product: &'static str, plan: String },
    #[error("the policy may not exclude {plan}, the plan of {product} that grants its capability")]
    ExcludesGrantingPlan {
        product: &'static str,
        plan: &'static str,
    },
}

impl Policy {
    /// Builds the chain of a policy from its products and exclusions, enforcing the rules an admin
    /// must follow: at most four backups, no product twice, exclusions only of the policy's own
    /// products' plans, and never the plan that grants the product's autoclaim capability.
    pub fn build_chain(
        primary: ProductId,
        backups: &[ProductId],
        excluded: &[(ProductId, Vec<String>)],
    ) -> Result<Vec<ChainLink>, PolicyError> {
        if backups.len() > MAX_BACKUP_PRODUCTS {
            return Err(PolicyError::TooManyBackups(backups.len()));
        }
        let products: Vec<ProductId> = std::iter::once(primary)
            .chain(backups.iter().copied())
            .collect();
        for (i, p) in products.iter().enumerate() {
            if products[..i].contains(p) {
                return Err(PolicyError::RepeatedProduct(Catalog::product(*p).key));
            }
        }
        let mut chain: Vec<ChainLink> = products
            .iter()
            .map(|&product| ChainLink {
                product,
                disabled_plans: Vec::new(),
                grants: Catalog::product(product).capabilities(),
            })
            .collect();
        for (product_id, plan_ids) in excluded {
            let product = Catalog::product(*product_id);
            let link = chain
                .iter_mut()
                .find(|l| l.product == *product_id)
                .ok_or(PolicyError::ExclusionForOtherProduct(product.key))?;
            for plan_id in plan_ids {
                let (index, plan) =
                    product
                        .plan_by_id(plan_id)
                        .ok_or_else(|| PolicyError::UnknownPlan {
                            product: product.key,
                            plan: plan_id.clone(),
                        })?;
                if !plan.grants.is_empty() {
                    return Err(PolicyError::ExcludesGrantingPlan {
                        product: product.key,
                        plan: plan.name,
                    });
                }
                if !link.disabled_plans.contains(&index) {
                    link.disabled_plans.push(index);
                }
            }
            link.disabled_plans.sort();
            link.grants = product.capabilities_without(&link.disabled_plans);
        }
        Ok(chain)
    }

    /// Whether the policy can make new claims (its version in force is on and not deleted).
    pub fn is_active(&self) -> bool {
        self.enabled && !self.deleted
    }

    pub fn primary(&self) -> ProductId {
        self.chain[0].product
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> ProductId {
        Catalog::by_key(key).unwrap()
    }

    #[test]
    fn exclusions_become_disabled_plans() {
        let premium = id("power_automate_premium");
        let chain = Policy::build_chain(
            premium,
            &[],
            &[(premium, vec!["113feb6c-3fe4-4440-bddc-54d774bf0318".into()])],
        )
        .unwrap();
        assert_eq!(chain[0].disabled_plans.len(), 1);
        assert_eq!(chain[0].grants, Catalog::product(premium).capabilities());
    }

    #[test]
    fn may_not_exclude_the_granting_plan() {
        let per_user = id("power_automate_per_user");
        let err = Policy::build_chain(
            per_user,
            &[],
            &[(
                per_user,
                vec!["c5002c70-f725-4367-b409-f0eff4fee6c0".into()],
            )],
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::ExcludesGrantingPlan { .. }));
    }

    #[test]
    fn chain_rules() {
        let per_user = id("power_automate_per_user");
        let premium = id("power_automate_premium");
        assert!(matches!(
            Policy::build_chain(per_user, &[premium, per_user], &[]),
            Err(PolicyError::RepeatedProduct(_))
        ));
        assert!(matches!(
            Policy::build_chain(per_user, &[premium; 5], &[]),
            Err(PolicyError::TooManyBackups(5))
        ));
        assert!(matches!(
            Policy::build_chain(per_user, &[], &[(premium, vec![])]),
            Err(PolicyError::ExclusionForOtherProduct(_))
        ));
        assert!(matches!(
            Policy::build_chain(per_user, &[], &[(per_user, vec!["nope".into()])]),
            Err(PolicyError::UnknownPlan { .. })
        ));
        let chain = Policy::build_chain(per_user, &[premium], &[]).unwrap();
        assert_eq!(chain.len(), 2);
    }
}
