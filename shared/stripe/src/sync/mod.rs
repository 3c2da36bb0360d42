//! Catalog sync: what Stripe should hold for a catalog ([`desired`]), the writes that get it
//! there ([`plan`], pure), and a runner that observes, plans and applies ([`sync_catalog`]).
//!
//! Stripe Prices are immutable (only `active`, `nickname`, `metadata` and `lookup_key` change),
//! so a changed price is a new Price created with `transfer_lookup_key=true`; the old one stays
//! for the subscriptions already on it. Everything is compared after normalising amounts, so a
//! second sync of an unchanged catalog plans nothing and writes nothing.

mod adapter;

use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use tollgate_domain::StripeId;
use tollgate_domain::catalog::{Catalog, PriceComponent, Product, Tier, UnitPrice};
use tollgate_domain::ports::{
    CatalogSync, METER_CUSTOMER_KEY, METER_VALUE_KEY, MeterSpec, ObservedCatalog, PaymentsError,
    PriceScheme, PriceSpec, ProductSpec, RecurringSpec, SyncAction, TierSpec, UsageType,
    bills_metered_in_stripe, lookup_key, metadata, stripe_product_id,
};

/// The Stripe objects a catalog needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub meters: Vec<MeterSpec>,
    pub products: Vec<ProductSpec>,
    pub prices: Vec<PriceSpec>,
    /// Lookup keys of the Prices of retired products: archived if Stripe has them active.
    pub archived: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The catalog says something Stripe cannot express (validation should have caught it).
    #[error("{path}: {message}")]
    Catalog { path: String, message: String },
    /// A Stripe meter with this event name exists with settings sync cannot change (Stripe
    /// meters' aggregation and mappings are immutable, and event names must be unique).
    #[error(
        "Stripe meter {id} ({event_name}) has {field} = {found:?}, the catalog needs {want:?}; deactivate it in Stripe first"
    )]
    MeterConflict {
        id: String,
        event_name: String,
        field: &'static str,
        found: String,
        want: String,
    },
}

fn catalog_err(path: String, message: impl Into<String>) -> PlanError {
    PlanError::Catalog {
        path,
        message: message.into(),
    }
}

fn unit_decimal(u: &UnitPrice, path: &str) -> Result<Decimal, PlanError> {
    match (u.unit_amount, u.unit_amount_decimal) {
        (Some(a), None) => Ok(Decimal::from(a)),
        (None, Some(d)) => Ok(d),
        _ => Err(catalog_err(
            path.into(),
            "exactly one of unit_amount and unit_amount_decimal is required",
        )),
    }
}

/// The meters, products and prices a catalog needs in Stripe. Free products need nothing.
pub fn desired(catalog: &Catalog) -> Result<Desired, PlanError> {
    let meters = catalog
        .meters
        .iter()
        .map(|m| MeterSpec {
            event_name: m.event_name().to_string(),
            display_name: m.name.clone(),
        })
        .collect();
    let mut products = Vec::new();
    let mut prices = Vec::new();
    let mut archived = Vec::new();
    for (pi, product) in catalog.products.iter().enumerate() {
        if product.is_free() {
            continue;
        }
        products.push(ProductSpec {
            id: stripe_product_id(&product.id),
            name: product.name.clone(),
            description: Some(product.description.clone()).filter(|d| !d.is_empty()),
            metadata: BTreeMap::from([(metadata::PRODUCT_ID.to_string(), product.id.to_string())]),
        });
        for (ci, component) in product.prices.iter().enumerate() {
            let path = format!("products[{pi}].prices[{ci}]");
            if let Some(spec) = price_spec(catalog, product, component, &path)? {
                if product.on_sale() {
                    prices.push(spec);
                } else {
                    archived.push(spec.lookup_key);
                }
            }
        }
    }
    Ok(Desired {
        meters,
        products,
        prices,
        archived,
    })
}

fn price_spec(
    catalog: &Catalog,
    product: &Product,
    component: &PriceComponent,
    path: &str,
) -> Result<Option<PriceSpec>, PlanError> {
    let recurring = |usage: UsageType| -> Result<RecurringSpec, PlanError> {
        let interval = product.interval.ok_or_else(|| {
            catalog_err(
                path.into(),
                "a recurring price needs the product's interval",
            )
        })?;
        Ok(RecurringSpec { interval, usage })
    };
    let metered = |meter: &tollgate_domain::MeterId| -> Result<UsageType, PlanError> {
        let m = catalog.meter(meter.as_str()).ok_or_else(|| {
            catalog_err(format!("{path}.meter"), format!("unknown meter {meter}"))
        })?;
        Ok(UsageType::Metered {
            meter_event_name: m.event_name().to_string(),
        })
    };
    let per_unit = |unit_amount: Decimal| PriceScheme::PerUnit {
        unit_amount,
        transform: None,
    };
    if component.meter().is_some() && !bills_metered_in_stripe(product) {
        return Ok(None);
    }
    let (recurring, scheme) = match component {
        PriceComponent::Flat { amount, .. } => (
            Some(recurring(UsageType::Licensed)?),
            per_unit(Decimal::from(*amount)),
        ),
        PriceComponent::PerSeat { unit_amount, .. } => (
            Some(recurring(UsageType::Licensed)?),
            per_unit(Decimal::from(*unit_amount)),
        ),
        PriceComponent::OneTime { amount, .. } => (None, per_unit(Decimal::from(*amount))),
        PriceComponent::PerUnit {
            meter,
            unit,
            package,
            ..
        } => (
            Some(recurring(metered(meter)?)?),
            PriceScheme::PerUnit {
                unit_amount: unit_decimal(unit, path)?,
                transform: package.as_ref().map(|p| (p.size, p.round)),
            },
        ),
        PriceComponent::Tiered {
            meter, mode, tiers, ..
        } => (
            Some(recurring(metered(meter)?)?),
            PriceScheme::Tiered {
                mode: *mode,
                tiers: tier_specs(tiers, path)?,
            },
        ),
        PriceComponent::TieredPerSeat { mode, tiers, .. } => (
            Some(recurring(UsageType::Licensed)?),
            PriceScheme::Tiered {
                mode: *mode,
                tiers: tier_specs(tiers, path)?,
            },
        ),
    };
    Ok(Some(PriceSpec {
        lookup_key: lookup_key(&product.id, component.key()),
        product: stripe_product_id(&product.id),
        currency: catalog.currency.clone(),
        recurring,
        scheme,
    }))
}

/// A catalog's tiers as Stripe's `tiers[]` (a tier without a unit price charges 0 per unit).
fn tier_specs(tiers: &[Tier], path: &str) -> Result<Vec<TierSpec>, PlanError> {
    tiers
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            Ok(TierSpec {
                up_to: t.up_to,
                flat_amount: Decimal::from(t.flat_amount.unwrap_or(0)),
                unit_amount: match (t.unit.unit_amount, t.unit.unit_amount_decimal) {
                    (None, None) => Decimal::ZERO,
                    _ => unit_decimal(&t.unit, &format!("{path}.tiers[{ti}]"))?,
                },
            })
        })
        .collect()
}

/// The writes that make Stripe hold `desired`, in dependency order (meters, products, prices).
pub fn plan(desired: &Desired, observed: &ObservedCatalog) -> Result<Vec<SyncAction>, PlanError> {
    let mut actions = Vec::new();

    for spec in &desired.meters {
        let same_name = observed
            .meters
            .iter()
            .filter(|m| m.event_name == spec.event_name);
        // Stripe keeps event names unique among active meters; an inactive one can come back.
        let found = same_name
            .clone()
            .find(|m| m.active)
            .or_else(|| same_name.clone().next());
        let Some(m) = found else {
            actions.push(SyncAction::CreateMeter { spec: spec.clone() });
            continue;
        };
        let checks = [
            ("default_aggregation.formula", &m.aggregation, "sum"),
            (
                "customer_mapping.event_payload_key",
                &m.customer_payload_key,
                METER_CUSTOMER_KEY,
            ),
            (
                "value_settings.event_payload_key",
                &m.value_payload_key,
                METER_VALUE_KEY,
            ),
        ];
        for (field, found, want) in checks {
            if found != want {
                return Err(PlanError::MeterConflict {
                    id: m.id.to_string(),
                    event_name: m.event_name.clone(),
                    field,
                    found: found.clone(),
                    want: want.to_string(),
                });
            }
        }
        if !m.active {
            actions.push(SyncAction::ReactivateMeter {
                id: m.id.clone(),
                spec: spec.clone(),
            });
        }
        if m.display_name != spec.display_name {
            actions.push(SyncAction::UpdateMeter {
                id: m.id.clone(),
                spec: spec.clone(),
            });
        }
    }

    for spec in &desired.products {
        match observed.products.iter().find(|p| p.spec.id == spec.id) {
            None => actions.push(SyncAction::CreateProduct { spec: spec.clone() }),
            Some(p) => {
                // Only the metadata keys tollgate owns are compared: an operator may add others.
                let meta_differs = spec
                    .metadata
                    .iter()
                    .any(|(k, v)| p.spec.metadata.get(k) != Some(v));
                if !p.active
                    || p.spec.name != spec.name
                    || p.spec.description != spec.description
                    || meta_differs
                {
                    actions.push(SyncAction::UpdateProduct {
                        spec: spec.clone(),
                        from: p.spec.clone(),
                        reactivate: !p.active,
                    });
                }
            }
        }
    }

    for spec in &desired.prices {
        let current = observed
            .prices
            .iter()
            .find(|p| p.lookup_key == spec.lookup_key);
        match current {
            Some(p) if p.active && p.spec.as_ref() == Some(spec) => {}
            Some(p) => actions.push(SyncAction::CreatePrice {
                spec: spec.clone(),
                replaces: Some(p.id.clone()),
            }),
            None => actions.push(SyncAction::CreatePrice {
                spec: spec.clone(),
                replaces: None,
            }),
        }
    }
    // A retired product's Prices stop selling; a Price never synced has nothing to archive.
    for key in &desired.archived {
        for p in observed
            .prices
            .iter()
            .filter(|p| &p.lookup_key == key && p.active)
        {
            actions.push(SyncAction::ArchivePrice {
                id: p.id.clone(),
                lookup_key: key.clone(),
            });
        }
    }
    Ok(actions)
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the catalog is invalid:\n{0}")]
    Invalid(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("Stripe: {0}")]
    Stripe(#[from] PaymentsError),
}

/// What a sync did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    pub actions: Vec<SyncAction>,
    /// Ids written, in action order (empty on a dry run).
    pub written: Vec<StripeId>,
}

/// Observes Stripe, plans, and (unless `dry_run`) applies the plan in order. Applying stops at
/// the first failure; every write carries an idempotency key derived from the action, so
/// re-running after a failure completes the sync without duplicates.
pub async fn sync_catalog(
    stripe: &dyn CatalogSync,
    catalog: &Catalog,
    dry_run: bool,
) -> Result<SyncReport, SyncError> {
    let desired = desired(catalog)?;
    let observed = stripe.observe(catalog).await?;
    let actions = plan(&desired, &observed)?;
    let mut written = Vec::new();
    if !dry_run {
        for action in &actions {
            written.push(stripe.apply(action).await?);
        }
    }
    Ok(SyncReport {
        dry_run,
        actions,
        written,
    })
}

/// One line per action, for `--dry-run` and logs.
pub fn describe(action: &SyncAction) -> String {
    match action {
        SyncAction::CreateMeter { spec } => {
            format!("create meter {} ({})", spec.event_name, spec.display_name)
        }
        SyncAction::UpdateMeter { id, spec } => {
            format!("rename meter {id} to {:?}", spec.display_name)
        }
        SyncAction::ReactivateMeter { id, spec } => {
            format!("reactivate meter {id} ({})", spec.event_name)
        }
        SyncAction::CreateProduct { spec } => format!("create product {} ({})", spec.id, spec.name),
        SyncAction::UpdateProduct {
            spec, reactivate, ..
        } => format!(
            "update product {}{}",
            spec.id,
            if *reactivate { " (reactivate)" } else { "" }
        ),
        SyncAction::CreatePrice { spec, replaces } => match replaces {
            None => format!("create price {}", spec.lookup_key),
            Some(old) => format!(
                "create price {} (takes the lookup key from {old}, which stays for existing subscriptions)",
                spec.lookup_key
            ),
        },
        SyncAction::ArchivePrice { id, lookup_key } => format!(
            "archive price {id} ({lookup_key}): its product is retired; existing subscriptions keep it"
        ),
    }
}

#[cfg(test)]
mod tests;
