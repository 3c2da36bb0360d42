//! [`CatalogSync`] on async-stripe: reads meters, products and prices, and applies one
//! [`SyncAction`] per call with an idempotency key derived from the action itself.

use crate::StripeAdapter;
use crate::convert::{currency, stripe_id};
use async_trait::async_trait;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula,
    CreateBillingMeterValueSettings, ListBillingMeter, ReactivateBillingMeter, UpdateBillingMeter,
};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
    CreatePriceTiers, CreatePriceTiersUpTo, CreatePriceTransformQuantity,
    CreatePriceTransformQuantityRound, ListPrice, UpdatePrice,
};
use stripe_product::product::{CreateProduct, ListProduct, UpdateProduct};
use stripe_shared::{PriceBillingScheme, PriceTiersMode};
use tollgate_domain::catalog::{Catalog, Interval, Rounding, TierMode};
use tollgate_domain::ports::{
    CatalogSync, METER_CUSTOMER_KEY, METER_VALUE_KEY, ObservedCatalog, ObservedMeter,
    ObservedPrice, ObservedProduct, PaymentsError, PaymentsResult, PriceScheme, PriceSpec,
    ProductSpec, RecurringSpec, SyncAction, TierSpec, UsageType, metadata,
};
use tollgate_domain::{Currency, StripeId};

const PAGE: i64 = 100;

/// A short, stable digest of a value: the part of an idempotency key that changes when the
/// write's parameters change (Stripe rejects a reused key with other parameters).
fn digest(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(value).expect("sync actions serialise");
    hex::encode(&Sha256::digest(&json)[..12])
}

/// The idempotency key of a sync write.
pub(crate) fn action_key(action: &SyncAction) -> String {
    let d = digest(action);
    match action {
        SyncAction::CreateMeter { spec } => format!("tollgate:sync:meter:{}:{d}", spec.event_name),
        SyncAction::UpdateMeter { id, .. } => format!("tollgate:sync:meter-update:{id}:{d}"),
        SyncAction::ReactivateMeter { id, .. } => {
            format!("tollgate:sync:meter-reactivate:{id}:{d}")
        }
        SyncAction::CreateProduct { spec } => format!("tollgate:sync:product:{}:{d}", spec.id),
        SyncAction::UpdateProduct { spec, .. } => {
            format!("tollgate:sync:product-update:{}:{d}", spec.id)
        }
        // `replaces` is part of the digest: A → B → A creates a third Price instead of
        // replaying the first one (which no longer holds the lookup key).
        SyncAction::ArchivePrice { id, .. } => format!("tollgate:sync:price-archive:{id}"),
        SyncAction::CreatePrice { spec, .. } => {
            format!("tollgate:sync:price:{}:{d}", spec.lookup_key)
        }
    }
}

impl StripeAdapter {
    async fn list_meters(&self) -> PaymentsResult<Vec<stripe_billing::BillingMeter>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListBillingMeter::new().limit(PAGE);
            if let Some(a) = &after {
                req = req.starting_after(a.clone());
            }
            let page = self.client.get(&req).await?;
            after = page.data.last().map(|m| m.id.to_string());
            all.extend(page.data);
            if !page.has_more || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The products with these ids (active or not), without paging through the account.
    async fn products_by_id(&self, ids: &[String]) -> PaymentsResult<Vec<stripe_shared::Product>> {
        let mut all = Vec::new();
        for chunk in ids.chunks(50) {
            let page = self
                .client
                .get(&ListProduct::new().ids(chunk.to_vec()).limit(PAGE))
                .await?;
            all.extend(page.data);
        }
        Ok(all)
    }

    async fn meter_id(&self, event_name: &str) -> PaymentsResult<String> {
        if let Some(id) = self.meter_ids.lock().await.get(event_name) {
            return Ok(id.clone());
        }
        let meters = self.list_meters().await?;
        let mut cache = self.meter_ids.lock().await;
        for m in meters.iter().filter(|m| m.status.as_str() == "active") {
            cache.insert(m.event_name.clone(), m.id.to_string());
        }
        cache.get(event_name).cloned().ok_or_else(|| {
            PaymentsError::Unsupported(format!(
                "no active Stripe meter with event name {event_name:?}"
            ))
        })
    }

    async fn create_price(
        &self,
        spec: &PriceSpec,
        replaces: bool,
        key: &str,
    ) -> PaymentsResult<StripeId> {
        let (product_key, price_key) = spec
            .lookup_key
            .split_once('.')
            .unwrap_or((spec.lookup_key.as_str(), ""));
        let mut req = CreatePrice::new(currency(&spec.currency)?)
            .product(spec.product.clone())
            .lookup_key(spec.lookup_key.clone())
            .nickname(spec.lookup_key.clone())
            .metadata(HashMap::from([
                (metadata::PRODUCT_ID.to_string(), product_key.to_string()),
                (metadata::PRICE_KEY.to_string(), price_key.to_string()),
            ]));
        if replaces {
            // Moves the lookup key from the old Price in the same call, so checkout never sees
            // a moment with no Price for it.
            req = req.transfer_lookup_key(true);
        }
        if let Some(r) = &spec.recurring {
            let mut rec = CreatePriceRecurring::new(match r.interval {
                Interval::Month => CreatePriceRecurringInterval::Month,
                Interval::Year => CreatePriceRecurringInterval::Year,
            });
            match &r.usage {
                UsageType::Licensed => {
                    rec.usage_type = Some(CreatePriceRecurringUsageType::Licensed);
                }
                UsageType::Metered { meter_event_name } => {
                    rec.usage_type = Some(CreatePriceRecurringUsageType::Metered);
                    rec.meter = Some(self.meter_id(meter_event_name).await?);
                }
            }
            req = req.recurring(rec);
        }
        match &spec.scheme {
            PriceScheme::PerUnit {
                unit_amount,
                transform,
            } => {
                req = req.billing_scheme(PriceBillingScheme::PerUnit);
                req = match whole(*unit_amount) {
                    Some(a) => req.unit_amount(a),
                    None => req.unit_amount_decimal(decimal_string(*unit_amount)),
                };
                if let Some((size, round)) = transform {
                    let divide_by = i64::try_from(*size).map_err(|_| {
                        PaymentsError::Unsupported(format!("package size {size} too large"))
                    })?;
                    req = req.transform_quantity(CreatePriceTransformQuantity::new(
                        divide_by,
                        match round {
                            Rounding::Up => CreatePriceTransformQuantityRound::Up,
                            Rounding::Down => CreatePriceTransformQuantityRound::Down,
                        },
                    ));
                }
            }
            PriceScheme::Tiered { mode, tiers } => {
                let tiers = tiers
                    .iter()
                    .map(|t| {
                        let up_to = match t.up_to {
                            None => CreatePriceTiersUpTo::Inf,
                            Some(n) => {
                                CreatePriceTiersUpTo::I64(i64::try_from(n).map_err(|_| {
                                    PaymentsError::Unsupported(format!("tier bound {n} too large"))
                                })?)
                            }
                        };
                        let mut tier = CreatePriceTiers::new(up_to);
                        match whole(t.flat_amount) {
                            Some(0) => {}
                            Some(a) => tier.flat_amount = Some(a),
                            None => tier.flat_amount_decimal = Some(decimal_string(t.flat_amount)),
                        }
                        match whole(t.unit_amount) {
                            Some(a) => tier.unit_amount = Some(a),
                            None => tier.unit_amount_decimal = Some(decimal_string(t.unit_amount)),
                        }
                        Ok(tier)
                    })
                    .collect::<PaymentsResult<Vec<_>>>()?;
                req = req
                    .billing_scheme(PriceBillingScheme::Tiered)
                    .tiers_mode(match mode {
                        TierMode::Graduated => PriceTiersMode::Graduated,
                        TierMode::Volume => PriceTiersMode::Volume,
                    })
                    .tiers(tiers);
            }
        }
        let price = self.client.post(&req, key).await?;
        stripe_id(price.id.as_str())
    }
}

/// The amount as whole minor units, if it is one (Stripe then wants `unit_amount`).
fn whole(d: Decimal) -> Option<i64> {
    if d.fract().is_zero() {
        i64::try_from(d.trunc()).ok()
    } else {
        None
    }
}

fn decimal_string(d: Decimal) -> String {
    d.normalize().to_string()
}

fn parse_decimal(s: &str) -> Option<Decimal> {
    Decimal::from_str(s).ok()
}

/// A Stripe amount from its integer and decimal forms; absent = zero.
fn amount(int: Option<i64>, dec: Option<&str>) -> Option<Decimal> {
    match (dec, int) {
        (Some(d), _) => parse_decimal(d),
        (None, Some(i)) => Some(Decimal::from(i)),
        (None, None) => Some(Decimal::ZERO),
    }
}

/// Reads a Stripe Price back into the spec sync would have written for it. `None` when it has
/// something tollgate never writes, so it can never match a desired spec.
fn observed_spec(p: &stripe_shared::Price, meters: &HashMap<String, String>) -> Option<PriceSpec> {
    let recurring = match &p.recurring {
        None => None,
        Some(r) => {
            if r.interval_count != 1 {
                return None;
            }
            let interval = match r.interval.as_str() {
                "month" => Interval::Month,
                "year" => Interval::Year,
                _ => return None,
            };
            let usage = match r.usage_type.as_str() {
                "licensed" => UsageType::Licensed,
                "metered" => UsageType::Metered {
                    meter_event_name: meters.get(r.meter.as_deref()?)?.clone(),
                },
                _ => return None,
            };
            Some(RecurringSpec { interval, usage })
        }
    };
    let scheme = match p.billing_scheme.as_str() {
        "per_unit" => PriceScheme::PerUnit {
            unit_amount: match (&p.unit_amount_decimal, p.unit_amount) {
                (Some(d), _) => parse_decimal(d)?,
                (None, Some(a)) => Decimal::from(a),
                (None, None) => return None,
            },
            transform: match &p.transform_quantity {
                None => None,
                Some(t) => Some((
                    u64::try_from(t.divide_by).ok()?,
                    match t.round.as_str() {
                        "up" => Rounding::Up,
                        "down" => Rounding::Down,
                        _ => return None,
                    },
                )),
            },
        },
        "tiered" => PriceScheme::Tiered {
            mode: match p.tiers_mode.as_ref()?.as_str() {
                "graduated" => TierMode::Graduated,
                "volume" => TierMode::Volume,
                _ => return None,
            },
            tiers: p
                .tiers
                .as_ref()?
                .iter()
                .map(|t| {
                    Some(TierSpec {
                        up_to: t.up_to.map(u64::try_from).transpose().ok()?,
                        flat_amount: amount(t.flat_amount, t.flat_amount_decimal.as_deref())?,
                        unit_amount: amount(t.unit_amount, t.unit_amount_decimal.as_deref())?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        },
        _ => return None,
    };
    Some(PriceSpec {
        lookup_key: p.lookup_key.clone()?,
        product: p.product.id().to_string(),
        currency: Currency::parse(p.currency.to_string()).ok()?,
        recurring,
        scheme,
    })
}

#[async_trait]
impl CatalogSync for StripeAdapter {
    async fn observe(&self, catalog: &Catalog) -> PaymentsResult<ObservedCatalog> {
        let desired =
            crate::sync::desired(catalog).map_err(|e| PaymentsError::Unsupported(e.to_string()))?;

        let meters = self.list_meters().await?;
        let mut by_id = HashMap::new();
        {
            let mut cache = self.meter_ids.lock().await;
            for m in &meters {
                by_id.insert(m.id.to_string(), m.event_name.clone());
                if m.status.as_str() == "active" {
                    cache.insert(m.event_name.clone(), m.id.to_string());
                }
            }
        }
        let meters = meters
            .iter()
            .map(|m| {
                Ok(ObservedMeter {
                    id: stripe_id(m.id.as_str())?,
                    event_name: m.event_name.clone(),
                    display_name: m.display_name.clone(),
                    aggregation: m.default_aggregation.formula.as_str().to_string(),
                    customer_payload_key: m.customer_mapping.event_payload_key.clone(),
                    value_payload_key: m.value_settings.event_payload_key.clone(),
                    active: m.status.as_str() == "active",
                })
            })
            .collect::<PaymentsResult<Vec<_>>>()?;

        let wanted_products: Vec<String> = desired.products.iter().map(|p| p.id.clone()).collect();
        let products = self
            .products_by_id(&wanted_products)
            .await?
            .into_iter()
            .map(|p| ObservedProduct {
                spec: ProductSpec {
                    id: p.id.to_string(),
                    name: p.name,
                    description: p.description.filter(|d| !d.is_empty()),
                    metadata: p.metadata.into_iter().collect(),
                },
                active: p.active,
            })
            .collect();

        let keys: Vec<String> = desired
            .prices
            .iter()
            .map(|p| p.lookup_key.clone())
            .chain(desired.archived.iter().cloned())
            .collect();
        let mut prices = Vec::new();
        // Stripe takes at most 10 lookup keys per list call; tiers only come when expanded.
        for chunk in keys.chunks(10) {
            let list = self
                .client
                .get(
                    &ListPrice::new()
                        .lookup_keys(chunk.to_vec())
                        .expand(vec!["data.tiers".to_string()])
                        .limit(PAGE),
                )
                .await?;
            for p in list.data {
                let Some(lookup_key) = p.lookup_key.clone() else {
                    continue;
                };
                prices.push(ObservedPrice {
                    id: stripe_id(p.id.as_str())?,
                    lookup_key,
                    active: p.active,
                    spec: observed_spec(&p, &by_id),
                });
            }
        }
        Ok(ObservedCatalog {
            meters,
            products,
            prices,
        })
    }

    async fn apply(&self, action: &SyncAction) -> PaymentsResult<StripeId> {
        let key = action_key(action);
        match action {
            SyncAction::CreateMeter { spec } => {
                let req = CreateBillingMeter::new(
                    CreateBillingMeterDefaultAggregation::new(
                        CreateBillingMeterDefaultAggregationFormula::Sum,
                    ),
                    spec.display_name.clone(),
                    spec.event_name.clone(),
                )
                .customer_mapping(CreateBillingMeterCustomerMapping::new(
                    METER_CUSTOMER_KEY,
                    CreateBillingMeterCustomerMappingType::ById,
                ))
                .value_settings(CreateBillingMeterValueSettings::new(METER_VALUE_KEY));
                let m = self.client.post(&req, &key).await?;
                self.meter_ids
                    .lock()
                    .await
                    .insert(m.event_name.clone(), m.id.to_string());
                stripe_id(m.id.as_str())
            }
            SyncAction::UpdateMeter { id, spec } => {
                let req =
                    UpdateBillingMeter::new(id.as_str()).display_name(spec.display_name.clone());
                let m = self.client.post(&req, &key).await?;
                stripe_id(m.id.as_str())
            }
            SyncAction::ReactivateMeter { id, spec } => {
                let m = self
                    .client
                    .post(&ReactivateBillingMeter::new(id.as_str()), &key)
                    .await?;
                self.meter_ids
                    .lock()
                    .await
                    .insert(spec.event_name.clone(), m.id.to_string());
                stripe_id(m.id.as_str())
            }
            SyncAction::CreateProduct { spec } => {
                let mut req = CreateProduct::new(spec.name.clone())
                    .id(spec.id.clone())
                    .metadata(spec.metadata.clone().into_iter().collect::<HashMap<_, _>>());
                if let Some(d) = &spec.description {
                    req = req.description(d.clone());
                }
                let p = self.client.post(&req, &key).await?;
                stripe_id(p.id.as_str())
            }
            SyncAction::UpdateProduct {
                spec, reactivate, ..
            } => {
                let mut req = UpdateProduct::new(spec.id.as_str())
                    .name(spec.name.clone())
                    // An empty string is how Stripe unsets a description.
                    .description(spec.description.clone().unwrap_or_default())
                    .metadata(spec.metadata.clone().into_iter().collect::<HashMap<_, _>>());
                if *reactivate {
                    req = req.active(true);
                }
                let p = self.client.post(&req, &key).await?;
                stripe_id(p.id.as_str())
            }
            SyncAction::CreatePrice { spec, replaces } => {
                self.create_price(spec, replaces.is_some(), &key).await
            }
            SyncAction::ArchivePrice { id, .. } => {
                let p = self
                    .client
                    .post(&UpdatePrice::new(id.as_str()).active(false), &key)
                    .await?;
                stripe_id(p.id.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::ports::MeterSpec;

    #[test]
    fn keys_are_stable_and_change_with_parameters() {
        let a = SyncAction::CreateMeter {
            spec: MeterSpec {
                event_name: "api_calls".into(),
                display_name: "API calls".into(),
            },
        };
        let b = SyncAction::CreateMeter {
            spec: MeterSpec {
                event_name: "api_calls".into(),
                display_name: "Calls".into(),
            },
        };
        assert_eq!(action_key(&a), action_key(&a.clone()));
        assert_ne!(action_key(&a), action_key(&b));
        assert!(action_key(&a).starts_with("tollgate:sync:meter:api_calls:"));
        assert!(action_key(&a).len() <= 255);
    }

    #[test]
    fn amounts_use_the_integer_field_when_whole() {
        assert_eq!(whole(Decimal::new(8995, 0)), Some(8995));
        assert_eq!(whole(Decimal::new(8995000, 3)), Some(8995));
        assert_eq!(whole(Decimal::new(15, 2)), None);
        assert_eq!(decimal_string(Decimal::new(1500, 4)), "0.15");
        assert_eq!(amount(None, None), Some(Decimal::ZERO));
        assert_eq!(amount(Some(7), Some("7")), Some(Decimal::new(7, 0)));
        assert_eq!(amount(None, Some("0.0125")), Some(Decimal::new(125, 4)));
    }
}
