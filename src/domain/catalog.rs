//! The products autoclaim can assign, kept as data: SKUs, their service plans and which capability each
//! plan grants. Capabilities come from service plans, never from SKU names, so a licence whose granting
//! plan is disabled does not grant that capability.
//!
//! The catalog is process-wide: the two built-in products, extended by an operator's catalog file
//! (`--catalog`, see `file`) installed once at start, before anything reads it. Every reader (engine,
//! directory rows, wire conversion, admin API, report, verify) sees the same products for the whole
//! life of the process, so a `ProductId` means one product everywhere and `&'static` borrows are
//! sound (a loaded catalog's strings are leaked once; it lives as long as the process).
use std::fmt;
use std::sync::OnceLock;

mod file;

pub use file::{CatalogError, CatalogFile};

/// A set of capabilities, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    pub const PREMIUM_CLOUD_FLOWS: Capabilities = Capabilities(1);
    pub const ATTENDED_RPA: Capabilities = Capabilities(1 << 1);

    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits, for keys and ordering.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// How many capabilities the set holds: the measure of a product's breadth.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }
}

impl Capabilities {
    /// Every capability with the name a catalog file uses for it. Events' needs are defined in terms
    /// of these, so the set is fixed; products are data, capabilities are not.
    pub const NAMED: [(&'static str, Capabilities); 2] = [
        ("premium_cloud_flows", Capabilities::PREMIUM_CLOUD_FLOWS),
        ("attended_rpa", Capabilities::ATTENDED_RPA),
    ];

    pub fn from_name(name: &str) -> Option<Capabilities> {
        Self::NAMED
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, caps)| *caps)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = Capabilities::NAMED
            .iter()
            .filter(|(_, caps)| self.contains(*caps))
            .map(|(name, _)| *name)
            .collect();
        if names.is_empty() {
            names.push("none");
        }
        f.write_str(&names.join("+"))
    }
}

/// A service plan (an "app" in the admin center) inside a product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: &'static str,
    pub id: &'static str,
    pub grants: Capabilities,
}

/// A product that autoclaim policies can assign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// Stable key used on the wire and in policies.
    pub key: &'static str,
    pub display_name: &'static str,
    pub sku_part_number: &'static str,
    pub sku_id: &'static str,
    /// The app the admin center shows for a policy of this product.
    pub autoclaim_app: &'static str,
    pub plans: &'static [ServicePlan],
}

/// The plan whose name is given (test and example helper).
pub fn plan_index(product: &Product, name: &str) -> Option<PlanIndex> {
    product
        .plans
        .iter()
        .position(|p| p.name == name)
        .map(|i| PlanIndex(i as u8))
}

impl Product {
    /// What the product grants when the given plans are disabled.
    pub fn capabilities_without(&self, disabled: &[PlanIndex]) -> Capabilities {
        self.plans
            .iter()
            .enumerate()
            .filter(|(i, _)| !disabled.contains(&PlanIndex(*i as u8)))
            .fold(Capabilities::NONE, |caps, (_, plan)| {
                caps.union(plan.grants)
            })
    }

    pub fn capabilities(&self) -> Capabilities {
        self.capabilities_without(&[])
    }

    pub fn plan(&self, index: PlanIndex) -> &'static ServicePlan {
        &self.plans[index.0 as usize]
    }

    pub fn plan_by_id(&self, plan_id: &str) -> Option<(PlanIndex, &ServicePlan)> {
        self.plans
            .iter()
            .enumerate()
            .find(|(_, plan)| plan.id.eq_ignore_ascii_case(plan_id))
            .map(|(i, plan)| (PlanIndex(i as u8), plan))
    }
}

/// Index of a product in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductId(u8);

/// Index of a service plan inside its product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanIndex(pub u8);

/// How many products a catalog may hold: the bits of a `ProductSet`. 32 bits keep a directory row
/// (`UserRow`) at 16 bytes, which matters with one row per user in memory.
pub const MAX_PRODUCTS: usize = ProductSet::BITS;

/// A set of products, as bits (the catalog holds at most `MAX_PRODUCTS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProductSet(u32);

impl ProductSet {
    const BITS: usize = u32::BITS as usize;

    pub const fn union(self, other: ProductSet) -> ProductSet {
        ProductSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: ProductSet) -> ProductSet {
        ProductSet(self.0 & other.0)
    }

    pub fn remove(&mut self, product: ProductId) {
        self.0 &= !(1 << product.0);
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, product: ProductId) {
        self.0 |= 1 << product.0;
    }

    pub fn contains(self, product: ProductId) -> bool {
        self.0 & (1 << product.0) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = ProductId> {
        (0..Self::BITS as u8)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(ProductId)
    }
}

const EXCHANGE_FOUNDATION: ServicePlan = ServicePlan {
    name: "EXCHANGE_S_FOUNDATION",
    id: "113feb6c-3fe4-4440-bddc-54d774bf0318",
    grants: Capabilities::NONE,
};

/// The built-in products, always the first of the catalog (a file extends them). Names follow the
/// admin center's "Set an auto-claim app and product" page.
static BUILT_IN: [Product; 2] = [
    Product {
        key: "power_automate_per_user",
        display_name: "Power Automate per user plan",
        sku_part_number: "FLOW_PER_USER",
        sku_id: "4a51bf65-409c-4a91-b845-1121b571cc9d",
        autoclaim_app: "Power Automate per User Plan",
        plans: &[
            ServicePlan {
                name: "DYN365_CDS_P2",
                id: "6ea4c1ef-c259-46df-bce2-943342cd3cb2",
                grants: Capabilities::NONE,
            },
            EXCHANGE_FOUNDATION,
            ServicePlan {
                name: "FLOW_PER_USER",
                id: "c5002c70-f725-4367-b409-f0eff4fee6c0",
                grants: Capabilities::PREMIUM_CLOUD_FLOWS,
            },
        ],
    },
    Product {
        key: "power_automate_premium",
        display_name: "Power Automate Premium",
        sku_part_number: "POWERAUTOMATE_ATTENDED_RPA",
        sku_id: "eda1941c-3c4f-4995-b5eb-e85a42175ab9",
        autoclaim_app: "Power Automate RPA Attended",
        plans: &[
            ServicePlan {
                name: "CDS_ATTENDED_RPA",
                id: "3da2fd4c-1bee-4b61-a17f-94c31e5cab93",
                grants: Capabilities::NONE,
            },
            EXCHANGE_FOUNDATION,
            ServicePlan {
                name: "POWER_AUTOMATE_ATTENDED_RPA",
                id: "375cd0ad-c407-49fd-866a-0bff4f8a9a4d",
                grants: Capabilities::PREMIUM_CLOUD_FLOWS.union(Capabilities::ATTENDED_RPA),
            },
        ],
    },
];

/// The products in use: the built-ins and those of the installed file. Set at most once; the first
/// read without an installed file fixes the built-ins, so no reader ever sees the catalog change.
static PRODUCTS: OnceLock<&'static [Product]> = OnceLock::new();

fn in_use() -> &'static [Product] {
    PRODUCTS.get_or_init(|| &BUILT_IN)
}

/// The process-wide catalog.
pub struct Catalog;

impl Catalog {
    /// Makes the built-ins plus the file's products the catalog of this process. It must come before
    /// anything reads the catalog; installing the same products again is allowed (tests, a command
    /// that installs twice), a different catalog is refused with `CatalogError::AlreadyInstalled`.
    pub fn install(file: CatalogFile) -> Result<(), CatalogError> {
        let wanted: Vec<Product> = BUILT_IN
            .iter()
            .cloned()
            .chain(file.into_products())
            .collect();
        if let Some(current) = PRODUCTS.get() {
            return same_or_refused(current, &wanted);
        }
        let leaked: &'static [Product] = Vec::leak(wanted);
        match PRODUCTS.set(leaked) {
            Ok(()) => Ok(()),
            // Another thread installed first: fine if it installed the same.
            Err(_) => same_or_refused(in_use(), leaked),
        }
    }

    /// Reads, validates and installs a catalog file; the number of products then in the catalog.
    pub fn install_file(path: &std::path::Path) -> Result<usize, CatalogError> {
        Catalog::install(CatalogFile::read(path)?)?;
        Ok(in_use().len())
    }

    pub fn products() -> impl Iterator<Item = (ProductId, &'static Product)> {
        in_use()
            .iter()
            .enumerate()
            .map(|(i, p)| (ProductId(i as u8), p))
    }

    pub fn product(id: ProductId) -> &'static Product {
        &in_use()[id.0 as usize]
    }

    pub fn by_key(key: &str) -> Option<ProductId> {
        Self::products()
            .find(|(_, p)| p.key == key)
            .map(|(id, _)| id)
    }

    pub fn by_sku_id(sku_id: &str) -> Option<ProductId> {
        Self::products()
            .find(|(_, p)| p.sku_id.eq_ignore_ascii_case(sku_id))
            .map(|(id, _)| id)
    }

    pub fn keys() -> impl Iterator<Item = &'static str> {
        in_use().iter().map(|p| p.key)
    }

    /// The built-in products (what a file must not redefine).
    pub fn built_in() -> &'static [Product] {
        &BUILT_IN
    }
}

fn same_or_refused(current: &[Product], wanted: &[Product]) -> Result<(), CatalogError> {
    if current == wanted {
        Ok(())
    } else {
        Err(CatalogError::AlreadyInstalled {
            in_use: current.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(key: &str) -> &'static Product {
        Catalog::product(Catalog::by_key(key).unwrap())
    }

    #[test]
    fn capabilities_come_from_service_plans() {
        let per_user = product("power_automate_per_user");
        let premium = product("power_automate_premium");
        assert_eq!(per_user.capabilities(), Capabilities::PREMIUM_CLOUD_FLOWS);
        assert!(premium.capabilities().contains(Capabilities::ATTENDED_RPA));
        assert!(premium.capabilities().contains(per_user.capabilities()));
    }

    #[test]
    fn a_disabled_granting_plan_grants_nothing() {
        let premium = product("power_automate_premium");
        let rpa = plan_index(premium, "POWER_AUTOMATE_ATTENDED_RPA").unwrap();
        assert_eq!(premium.capabilities_without(&[rpa]), Capabilities::NONE);
        let cds = plan_index(premium, "CDS_ATTENDED_RPA").unwrap();
        let caps = premium.capabilities_without(&[cds]);
        assert_eq!(caps, premium.capabilities());
    }

    #[test]
    fn lookups_by_key_and_sku_id() {
        let id = Catalog::by_sku_id("EDA1941C-3C4F-4995-B5EB-E85A42175AB9").unwrap();
        assert_eq!(Catalog::product(id).key, "power_automate_premium");
        assert!(Catalog::by_key("office_e5").is_none());
    }

    #[test]
    fn capability_names_round_trip() {
        for (name, caps) in Capabilities::NAMED {
            assert_eq!(Capabilities::from_name(name), Some(caps));
            assert_eq!(caps.to_string(), name);
        }
        assert_eq!(Capabilities::from_name("unattended_rpa"), None);
    }

    #[test]
    fn a_product_set_holds_the_last_product_id() {
        let last = ProductId((MAX_PRODUCTS - 1) as u8);
        let mut set = ProductSet::default();
        set.insert(last);
        assert!(set.contains(last));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![last]);
        set.remove(last);
        assert!(set.is_empty());
    }

    #[test]
    fn installing_the_built_ins_again_is_allowed() {
        // Unit tests run on the built-ins; installing an empty file keeps them.
        Catalog::install(CatalogFile::parse(r#"{"products": []}"#).unwrap()).unwrap();
        assert_eq!(Catalog::keys().count(), 2);
    }

    #[test]
    fn a_different_catalog_after_the_first_read_is_refused() {
        assert!(Catalog::by_key("power_automate_per_user").is_some());
        let file = CatalogFile::parse(file::tests::ONE_EXTRA).unwrap();
        assert!(matches!(
            Catalog::install(file),
            Err(CatalogError::AlreadyInstalled { in_use: 2 })
        ));
    }
}
