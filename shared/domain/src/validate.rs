//! Catalog validation: every error at once, each with its JSON path
//! (`products[3].prices[0].tiers[1].up_to: must be greater than the previous tier (100)`).
//!
//! Two layers: the file's shape (serde, with `deny_unknown_fields`, so a typo'd field is an
//! error rather than a silently ignored default) and the rules a well-typed catalog must still
//! follow (references resolve, tiers ascend, amounts fit Stripe's limits, the pieces of a
//! product agree with each other). An operator fixes a catalog in one pass, not one error per run.

use crate::catalog::{
    Access, CATALOG_VERSION, Catalog, MAX_AMOUNT, MAX_DECIMAL_PLACES, Meter, Package,
    PriceComponent, Product, Tier, UnitPrice,
};
use crate::money::MinorUnits;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// Stripe's longest trial (`trial_period_days` ≤ 730).
pub const MAX_TRIAL_DAYS: u32 = 730;

/// One problem in a catalog, at a JSON path (empty for the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogError {
    pub path: String,
    pub message: String,
}

impl CatalogError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a catalog (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Catalog {
    /// Parses and validates a catalog file's JSON text.
    pub fn from_json(text: &str) -> Result<Catalog, CatalogErrors> {
        parse(text)
    }
    /// Checks the rules of a parsed catalog; `Ok` or every error.
    pub fn validate(&self) -> Result<(), CatalogErrors> {
        let errors = validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CatalogErrors(errors))
        }
    }
}

/// Parses JSON text into a valid [`Catalog`], or returns every error found.
pub fn parse(text: &str) -> Result<Catalog, CatalogErrors> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CatalogErrors(vec![CatalogError::new("", format!("not valid JSON: {e}"))]))?;
    match from_value(&value) {
        Ok(catalog) => {
            catalog.validate()?;
            Ok(catalog)
        }
        Err(mut errors) => {
            // The rules of the parts that did parse are reported too: an operator fixes a
            // missing field and a tier out of order in one pass, not two.
            errors.extend(rule_errors_of_parsed_parts(&value));
            Err(CatalogErrors(errors))
        }
    }
}

/// The rule errors (as [`validate`] reports them) of the meters and products of `value` that
/// parse on their own, at their original paths. Items that do not parse are left out (their
/// shape errors are reported already); a reference to a meter whose item did not parse is not
/// reported as unknown. Empty when the file's top level (version, currency) does not parse.
fn rule_errors_of_parsed_parts(value: &Value) -> Vec<CatalogError> {
    let Value::Object(map) = value else {
        return Vec::new();
    };
    let items = |list: &str| {
        map.get(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut top = map.clone();
    top.insert("meters".into(), Value::Array(Vec::new()));
    top.insert("products".into(), Value::Array(Vec::new()));
    let Ok(mut partial) = serde_json::from_value::<Catalog>(Value::Object(top)) else {
        return Vec::new();
    };
    let mut meter_at = Vec::new();
    let mut broken = Vec::new();
    for (i, raw) in items("meters").iter().enumerate() {
        match serde_json::from_value::<Meter>(raw.clone()) {
            Ok(m) => {
                partial.meters.push(m);
                meter_at.push(i);
            }
            Err(_) => {
                broken.push(format!("meters[{i}]"));
                // Stand-in so that products naming this meter are not told it is unknown.
                if let Some(id) = raw.get("id").cloned()
                    && let Ok(m) = serde_json::from_value::<Meter>(
                        serde_json::json!({"id": id, "name": "(does not parse)"}),
                    )
                {
                    partial.meters.push(m);
                    meter_at.push(usize::MAX);
                }
            }
        }
    }
    let mut product_at = Vec::new();
    for (i, raw) in items("products").iter().enumerate() {
        match serde_json::from_value::<Product>(raw.clone()) {
            Ok(p) => {
                partial.products.push(p);
                product_at.push(i);
            }
            Err(_) => broken.push(format!("products[{i}]")),
        }
    }
    // Paths of the partial catalog → paths of the file.
    let remap = |path: &str| -> Option<String> {
        for (list, at) in [("meters", &meter_at), ("products", &product_at)] {
            if let Some(rest) = path.strip_prefix(&format!("{list}["))
                && let Some(close) = rest.find(']')
                && let Ok(k) = rest[..close].parse::<usize>()
            {
                let original = *at.get(k)?;
                if original == usize::MAX {
                    return None;
                }
                return Some(format!("{list}[{original}]{}", &rest[close + 1..]));
            }
        }
        Some(path.to_string())
    };
    validate(&partial)
        .into_iter()
        .filter(|e| e.path != "products" || !broken.iter().any(|b| b.starts_with("products")))
        .filter_map(|e| {
            let path = remap(&e.path)?;
            let inside_broken = broken
                .iter()
                .any(|b| path == *b || path.starts_with(&format!("{b}.")));
            (!inside_broken).then_some(CatalogError::new(path, e.message))
        })
        .collect()
}

/// Deserializes a JSON value into a catalog. On failure, deserializes each product and meter
/// on its own so that a shape error in `products[1]` does not hide one in `products[4]`.
pub fn from_value(value: &Value) -> Result<Catalog, Vec<CatalogError>> {
    let first = match typed::<Catalog>(value, "") {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let mut errors = Vec::new();
    if let Value::Object(map) = value {
        let mut top = map.clone();
        for list in ["meters", "products"] {
            if let Some(Value::Array(items)) = map.get(list) {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{list}[{i}]");
                    let result = if list == "products" {
                        typed::<Product>(item, &path).map(drop)
                    } else {
                        typed::<Meter>(item, &path).map(drop)
                    };
                    if let Err(e) = result {
                        errors.extend(sharpen(e, item, &path));
                    }
                }
                top.insert(list.to_string(), Value::Array(Vec::new()));
            }
        }
        if let Err(e) = typed::<Catalog>(&Value::Object(top), "") {
            errors.insert(0, e);
        }
    }
    if errors.is_empty() {
        errors.push(first);
    }
    Err(errors)
}

/// A price component is an internally tagged enum, which serde buffers, so its errors stop at
/// `products[i].prices[k]`. Re-reads the price's tiers and package on their own to point at
/// the exact tier or field.
fn sharpen(e: CatalogError, product: &Value, product_path: &str) -> Vec<CatalogError> {
    let Some(k) = e
        .path
        .strip_prefix(&format!("{product_path}.prices["))
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|k| k.parse::<usize>().ok())
    else {
        return vec![e];
    };
    let price = &product["prices"][k];
    let at = format!("{product_path}.prices[{k}]");
    let mut precise = Vec::new();
    if let Some(tiers) = price["tiers"].as_array() {
        for (j, tier) in tiers.iter().enumerate() {
            precise.extend(typed::<Tier>(tier, &format!("{at}.tiers[{j}]")).err());
        }
    }
    if !price["package"].is_null() {
        precise.extend(typed::<Package>(&price["package"], &format!("{at}.package")).err());
    }
    if precise.is_empty() { vec![e] } else { precise }
}

/// Deserializes `value` as `T`, reporting the path of the first shape error under `prefix`.
fn typed<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, CatalogError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let inner = if inner == "." { String::new() } else { inner };
        let path = match (prefix.is_empty(), inner.starts_with('[')) {
            (true, _) => inner,
            (false, true) => format!("{prefix}{inner}"),
            (false, false) if inner.is_empty() => prefix.to_string(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        CatalogError::new(path, e.into_inner().to_string())
    })
}

/// Checks every rule of a well-typed catalog; returns all the errors (empty when valid).
pub fn validate(c: &Catalog) -> Vec<CatalogError> {
    let mut v = Errors::default();
    if c.version != CATALOG_VERSION {
        v.push(
            "version",
            format!(
                "must be {CATALOG_VERSION} (this build reads catalog format {CATALOG_VERSION}; found {})",
                c.version
            ),
        );
    }
    if c.products.is_empty() {
        v.push("products", "must list at least one product");
    }

    let mut meter_ids = HashMap::new();
    let mut event_names = HashMap::new();
    for (i, m) in c.meters.iter().enumerate() {
        if let Some(first) = meter_ids.insert(m.id.as_str(), i) {
            v.push(
                format!("meters[{i}].id"),
                format!(
                    "duplicate meter id {:?} (first at meters[{first}])",
                    m.id.as_str()
                ),
            );
        } else if let Some(first) = event_names.insert(m.event_name(), i) {
            v.push(
                format!("meters[{i}].event_name"),
                format!(
                    "duplicate Stripe event name {:?} (first at meters[{first}])",
                    m.event_name()
                ),
            );
        }
        if m.name.trim().is_empty() {
            v.push(format!("meters[{i}].name"), "must not be empty");
        }
    }

    let sells_credit = c.products.iter().any(|p| p.credit.is_some());
    let mut product_ids = HashMap::new();
    for (i, p) in c.products.iter().enumerate() {
        let at = format!("products[{i}]");
        if let Some(first) = product_ids.insert(p.id.as_str(), i) {
            v.push(
                format!("{at}.id"),
                format!(
                    "duplicate product id {:?} (first at products[{first}])",
                    p.id.as_str()
                ),
            );
        }
        product(&mut v, c, p, &at, sells_credit);
    }
    v.0
}

#[derive(Default)]
struct Errors(Vec<CatalogError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(CatalogError::new(path, message));
    }
    fn amount(&mut self, path: String, amount: MinorUnits) {
        if amount < 0 {
            self.push(path, format!("must not be negative (found {amount})"));
        } else if amount > MAX_AMOUNT {
            self.push(
                path,
                format!(
                    "must be at most {MAX_AMOUNT} minor units, Stripe's limit (found {amount})"
                ),
            );
        }
    }
    fn meter(&mut self, c: &Catalog, path: String, meter: &str) {
        if c.meter(meter).is_none() {
            let known: Vec<&str> = c.meters.iter().map(|m| m.id.as_str()).collect();
            self.push(
                path,
                format!(
                    "unknown meter {meter:?} (catalog meters: {})",
                    known.join(", ")
                ),
            );
        }
    }
    /// Exactly one of `unit_amount` / `unit_amount_decimal`, within Stripe's limits.
    /// `optional`: a tier may have neither when it has a flat amount.
    fn unit(&mut self, at: &str, u: &UnitPrice, optional: bool) {
        match (u.unit_amount, u.unit_amount_decimal) {
            (Some(_), Some(_)) => self.push(
                format!("{at}.unit_amount_decimal"),
                "set only one of unit_amount and unit_amount_decimal",
            ),
            (None, None) if !optional => self.push(
                at.to_string(),
                "must set unit_amount or unit_amount_decimal",
            ),
            _ => {}
        }
        if let Some(a) = u.unit_amount {
            self.amount(format!("{at}.unit_amount"), a);
        }
        if let Some(d) = u.unit_amount_decimal {
            let path = format!("{at}.unit_amount_decimal");
            let places = d.normalize().scale();
            if d.is_sign_negative() && !d.is_zero() {
                self.push(path, format!("must not be negative (found {d})"));
            } else if places > MAX_DECIMAL_PLACES {
                self.push(
                    path,
                    format!("must have at most {MAX_DECIMAL_PLACES} decimal places, Stripe's limit (found {places})"),
                );
            } else if d > rust_decimal::Decimal::from(MAX_AMOUNT) {
                self.push(
                    path,
                    format!("must be at most {MAX_AMOUNT} minor units, Stripe's limit (found {d})"),
                );
            }
        }
    }
}

fn product(v: &mut Errors, c: &Catalog, p: &Product, at: &str, sells_credit: bool) {
    if p.name.trim().is_empty() {
        v.push(format!("{at}.name"), "must not be empty");
    }
    successor(v, c, p, at);
    let recurring = p.interval.is_some();
    if p.trial_days > 0 && !recurring {
        v.push(
            format!("{at}.trial_days"),
            "only a subscription product (with an interval) can have a trial",
        );
    }
    if p.trial_days > MAX_TRIAL_DAYS {
        v.push(
            format!("{at}.trial_days"),
            format!(
                "must be at most {MAX_TRIAL_DAYS}, Stripe's limit (found {})",
                p.trial_days
            ),
        );
    }
    if p.rate_limit_per_minute == Some(0) {
        v.push(
            format!("{at}.rate_limit_per_minute"),
            "must be at least 1 (leave it out for no rate limit)",
        );
    }
    if let Some(q) = &p.quota {
        v.meter(c, format!("{at}.quota.meter"), q.meter.as_str());
        if q.limit == 0 {
            v.push(format!("{at}.quota.limit"), "must be at least 1");
        }
    }

    // Stripe bills a subscription's recurring prices together, on the product's interval, so a
    // product with an interval needs something to bill each interval, and one without an
    // interval can only sell one-time things (one-time prices, access, credit, prepaid usage).
    if recurring
        && !p.prices.is_empty()
        && p.prices
            .iter()
            .all(|x| matches!(x, PriceComponent::OneTime { .. }))
    {
        v.push(
            format!("{at}.interval"),
            "a product whose only prices are one_time has nothing to bill each interval: remove interval or add a recurring price",
        );
    }

    if let Some(access) = &p.access {
        if recurring {
            v.push(
                format!("{at}.access"),
                "time-limited access is bought by a one-time payment: remove interval (mixed one-time access and subscription)",
            );
        }
        if !p
            .prices
            .iter()
            .any(|x| matches!(x, PriceComponent::OneTime { .. }))
        {
            v.push(
                format!("{at}.access"),
                "needs a one_time price that buys the access",
            );
        }
        if matches!(access, Access::Days(0)) {
            v.push(format!("{at}.access.days"), "must be at least 1");
        }
    }

    if let Some(credit) = &p.credit {
        if recurring {
            v.push(
                format!("{at}.credit"),
                "credit packs are one-time purchases: remove interval",
            );
        }
        if credit.packs.is_empty() && credit.custom.is_none() {
            v.push(
                format!("{at}.credit"),
                "must offer at least one pack or a custom amount",
            );
        }
        let mut seen = HashMap::new();
        for (k, &pack) in credit.packs.iter().enumerate() {
            let path = format!("{at}.credit.packs[{k}]");
            if pack <= 0 {
                v.push(path, format!("must be positive (found {pack})"));
            } else if pack > MAX_AMOUNT {
                v.amount(path, pack);
            } else if let Some(first) = seen.insert(pack, k) {
                v.push(
                    path,
                    format!("duplicate pack {pack} (first at packs[{first}])"),
                );
            }
        }
        if let Some(custom) = &credit.custom {
            if custom.min <= 0 {
                v.push(
                    format!("{at}.credit.custom.min"),
                    format!("must be positive (found {})", custom.min),
                );
            }
            v.amount(format!("{at}.credit.custom.max"), custom.max);
            if custom.min > custom.max {
                v.push(
                    format!("{at}.credit.custom.min"),
                    format!(
                        "must not be greater than max ({} > {})",
                        custom.min, custom.max
                    ),
                );
            }
        }
    }

    if p.prepaid {
        if p.metered().next().is_none() {
            v.push(
                format!("{at}.prepaid"),
                "a prepaid product needs a metered price whose usage draws the credit down",
            );
        }
        if !sells_credit {
            v.push(
                format!("{at}.prepaid"),
                "no product in the catalog sells credit (add a product with `credit`)",
            );
        }
    }

    let mut keys = HashMap::new();
    let mut metered_by: HashMap<&str, usize> = HashMap::new();
    let mut per_seat: Option<usize> = None;
    for (k, price) in p.prices.iter().enumerate() {
        let pat = format!("{at}.prices[{k}]");
        if let Some(first) = keys.insert(price.key().as_str(), k) {
            v.push(
                format!("{pat}.key"),
                format!(
                    "duplicate price key {:?} (first at prices[{first}]); lookup keys `{}` would collide",
                    price.key().as_str(),
                    price.lookup_key(&p.id)
                ),
            );
        }
        if price.is_licensed() && !recurring {
            v.push(
                pat.clone(),
                "a recurring price needs the product's interval (month or year); use one_time for a single charge",
            );
        }
        if let Some(meter) = price.meter() {
            v.meter(c, format!("{pat}.meter"), meter.as_str());
            if let Some(first) = metered_by.insert(meter.as_str(), k) {
                v.push(
                    format!("{pat}.meter"),
                    format!(
                        "meter {:?} is already billed by prices[{first}]",
                        meter.as_str()
                    ),
                );
            }
            // A metered Stripe price is recurring: it needs the subscription's interval,
            // unless usage is paid from prepaid credit and never invoiced.
            if !recurring && !p.prepaid {
                v.push(
                    pat.clone(),
                    "a metered price needs the product's interval (month or year), or `prepaid: true`",
                );
            }
        }
        match price {
            PriceComponent::Flat { amount, .. } | PriceComponent::OneTime { amount, .. } => {
                v.amount(format!("{pat}.amount"), *amount);
            }
            PriceComponent::PerSeat { .. } | PriceComponent::TieredPerSeat { .. } => {
                if let PriceComponent::TieredPerSeat { tiers, .. } = price {
                    tiered(v, &pat, tiers);
                }
                if let PriceComponent::PerSeat { unit_amount, .. } = price {
                    v.amount(format!("{pat}.unit_amount"), *unit_amount);
                }
                let (min_seats, max_seats) = price.seat_bounds().unwrap_or((1, None));
                let (min_seats, max_seats) = (&min_seats, &max_seats);
                if *min_seats == 0 {
                    v.push(format!("{pat}.min_seats"), "must be at least 1");
                }
                if let Some(max) = max_seats
                    && max < min_seats
                {
                    v.push(
                        format!("{pat}.max_seats"),
                        format!("must be at least min_seats ({max} < {min_seats})"),
                    );
                }
                if let Some(first) = per_seat.replace(k) {
                    v.push(
                        pat.clone(),
                        format!("a product has one seat count: per_seat price already at prices[{first}]"),
                    );
                }
            }
            PriceComponent::PerUnit { unit, package, .. } => {
                v.unit(&pat, unit, false);
                if let Some(pkg) = package
                    && pkg.size == 0
                {
                    v.push(format!("{pat}.package.size"), "must be at least 1");
                }
            }
            PriceComponent::Tiered { tiers, .. } => tiered(v, &pat, tiers),
        }
    }
}

/// A successor is named only by a retired product, and is another product on sale that
/// Stripe can move a subscription to (same interval: Stripe cannot change the interval of a
/// subscription item in place, docs.stripe.com/billing/subscriptions/change-price).
fn successor(v: &mut Errors, c: &Catalog, p: &Product, at: &str) {
    let Some(id) = &p.successor else {
        return;
    };
    let path = format!("{at}.successor");
    if p.on_sale() {
        v.push(
            path,
            "only a retired product (status: retired) has a successor",
        );
        return;
    }
    if id == &p.id {
        v.push(path, "a product cannot succeed itself");
        return;
    }
    match c.product(id.as_str()) {
        None => v.push(path, format!("unknown product {:?}", id.as_str())),
        Some(s) if !s.on_sale() => {
            v.push(path, format!("product {:?} is retired too", id.as_str()))
        }
        Some(s) if s.interval != p.interval || s.prepaid != p.prepaid => v.push(
            path,
            format!(
                "product {:?} bills differently (interval or prepaid): a subscription cannot move to it",
                id.as_str()
            ),
        ),
        Some(_) => {}
    }
}

fn tiered(v: &mut Errors, pat: &str, tiers: &[Tier]) {
    if tiers.is_empty() {
        v.push(format!("{pat}.tiers"), "must have at least one tier");
        return;
    }
    let last = tiers.len() - 1;
    let mut previous: Option<u64> = None;
    for (j, t) in tiers.iter().enumerate() {
        let tat = format!("{pat}.tiers[{j}]");
        match t.up_to {
            Some(0) => v.push(format!("{tat}.up_to"), "must be at least 1"),
            Some(up) => {
                if let Some(prev) = previous
                    && up <= prev
                {
                    v.push(
                        format!("{tat}.up_to"),
                        format!("must be greater than the previous tier ({up} <= {prev})"),
                    );
                }
                if j == last {
                    v.push(
                        format!("{tat}.up_to"),
                        "the last tier must be unbounded (null, Stripe's `inf`)",
                    );
                }
            }
            None if j != last => v.push(
                format!("{tat}.up_to"),
                "only the last tier may be unbounded (null)",
            ),
            None => {}
        }
        if let Some(up) = t.up_to {
            previous = Some(previous.map_or(up, |p| p.max(up)));
        }
        if let Some(flat) = t.flat_amount {
            v.amount(format!("{tat}.flat_amount"), flat);
        }
        let has_unit = t.unit.unit_amount.is_some() || t.unit.unit_amount_decimal.is_some();
        if t.flat_amount.is_none() && !has_unit {
            v.push(
                tat.clone(),
                "must set flat_amount, unit_amount or unit_amount_decimal",
            );
        }
        v.unit(&tat, &t.unit, true);
    }
}
