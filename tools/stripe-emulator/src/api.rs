//! Stripe's v1 resources: parameter handling and validation for each endpoint.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::objects::{self, CustomerFields, SessionInit};
use crate::params::Params;
use crate::state::{MeterErrorReport, State, StoredMeterEvent, Table, new_id};

/// Stripe's window for meter event timestamps, and for identifier uniqueness.
const METER_EVENT_MAX_AGE_SECS: i64 = 35 * 86_400;
const METER_EVENT_MAX_FUTURE_SECS: i64 = 5 * 60;
const IDENTIFIER_WINDOW_SECS: i64 = 24 * 3600;
/// The emulator's opaque search cursor is this prefix and an offset.
const SEARCH_PAGE_PREFIX: &str = "page_";

impl State {
    pub fn dispatch(&mut self, method: &str, path: &str, p: &Params) -> ApiResult<Value> {
        let segs: Vec<&str> = path
            .trim_start_matches("/v1/")
            .trim_end_matches('/')
            .split('/')
            .collect();
        // Stripe rejects parameters it does not know, so a misspelt one fails here as it would
        // there (parameters Stripe knows but the emulator ignores are accepted).
        if let (Some(allowed), Value::Object(given)) = (allowed_params(method, &segs), &p.0)
            && let Some(unknown) = given.keys().find(|k| !allowed.contains(&k.as_str()))
        {
            return Err(ApiError::unknown_param(unknown));
        }
        // GET parameters too: Stripe answers 400 `parameter_unknown` to a query parameter it
        // does not know (https://docs.stripe.com/error-codes#parameter-unknown). A filter Stripe
        // has but the emulator does not apply is refused the same way, so that no test can pass
        // while believing a filter was applied.
        if method == "GET"
            && let Value::Object(given) = &p.0
            && let Some(unknown) = given
                .keys()
                .find(|k| !get_params(&segs).contains(&k.as_str()))
        {
            return Err(ApiError::unknown_param(unknown));
        }
        let v = match (method, segs.as_slice()) {
            ("POST", ["customers"]) => self.create_customer(p),
            ("GET", ["customers"]) => self.list(&self.customers, "/v1/customers", p, |c, p| {
                p.opt_str("email")
                    .ok()
                    .flatten()
                    .is_none_or(|e| c["email"] == e.as_str())
            }),
            ("GET", ["customers", "search"]) => {
                self.search(&self.customers, "/v1/customers/search", p)
            }
            ("GET", ["customers", id]) => self.retrieve(&self.customers, "customer", id),
            ("POST", ["customers", id]) => self.update_customer(id, p),
            ("POST", ["customers", id, "balance_transactions"]) => self.create_balance_txn(id, p),
            ("GET", ["customers", id, "balance_transactions"]) => {
                self.retrieve(&self.customers, "customer", id)?;
                let url = format!("/v1/customers/{id}/balance_transactions");
                self.list(&self.balance_txns, &url, p, |t, _| t["customer"] == *id)
            }
            ("GET", ["customers", cus, "balance_transactions", id]) => self
                .balance_txns
                .get(id)
                .filter(|t| t["customer"] == *cus)
                .cloned()
                .ok_or_else(|| ApiError::no_such("customer balance transaction", id, "id")),

            ("POST", ["products"]) => self.create_product(p),
            ("GET", ["products"]) => self.list(&self.products, "/v1/products", p, |x, p| {
                let ids = p.str_list("ids").unwrap_or_default();
                active_filter(x, p) && (ids.is_empty() || ids.iter().any(|i| x["id"] == i.as_str()))
            }),
            ("GET", ["products", "search"]) => {
                self.search(&self.products, "/v1/products/search", p)
            }
            ("GET", ["products", id]) => self.retrieve(&self.products, "product", id),
            ("POST", ["products", id]) => self.update_product(id, p),

            ("POST", ["prices"]) => self.create_price(p),
            ("GET", ["prices"]) => self.list(&self.prices, "/v1/prices", p, |x, p| {
                let keys = p.str_list("lookup_keys").unwrap_or_default();
                active_filter(x, p)
                    && (keys.is_empty() || keys.iter().any(|k| x["lookup_key"] == k.as_str()))
                    && p.opt_str("product")
                        .ok()
                        .flatten()
                        .is_none_or(|v| x["product"] == v.as_str())
                    && p.opt_str("currency")
                        .ok()
                        .flatten()
                        .is_none_or(|v| x["currency"] == v.as_str())
                    && p.opt_str("type")
                        .ok()
                        .flatten()
                        .is_none_or(|v| x["type"] == v.as_str())
            }),
            ("GET", ["prices", "search"]) => self.search(&self.prices, "/v1/prices/search", p),
            ("GET", ["prices", id]) => self.retrieve(&self.prices, "price", id),
            ("POST", ["prices", id]) => self.update_price(id, p),

            ("POST", ["billing", "meters"]) => self.create_meter(p),
            ("GET", ["billing", "meters"]) => {
                self.list(&self.meters, "/v1/billing/meters", p, |x, p| {
                    p.opt_str("status")
                        .ok()
                        .flatten()
                        .is_none_or(|s| x["status"] == s.as_str())
                })
            }
            ("GET", ["billing", "meters", id]) => self.retrieve(&self.meters, "billing.meter", id),
            ("POST", ["billing", "meters", id]) => self.update_meter(id, p),
            ("POST", ["billing", "meters", id, "deactivate"]) => {
                self.set_meter_status(id, "inactive")
            }
            ("POST", ["billing", "meters", id, "reactivate"]) => {
                self.set_meter_status(id, "active")
            }
            ("GET", ["billing", "meters", id, "event_summaries"]) => self.meter_summaries(id, p),
            ("POST", ["billing", "meter_events"]) => self.create_meter_event(p),

            ("POST", ["checkout", "sessions"]) => self.create_session(p),
            ("POST", ["refunds"]) => {
                let charge = p.opt_str("charge")?;
                let payment_intent = p.opt_str("payment_intent")?;
                let amount = p.opt_i64("amount")?;
                self.create_refund(charge.as_deref(), payment_intent.as_deref(), amount)
            }
            ("GET", ["charges", id]) => self.retrieve(&self.charges, "charge", id),
            ("GET", ["checkout", "sessions"]) => {
                self.list(&self.sessions, "/v1/checkout/sessions", p, |x, p| {
                    p.filter_matches("customer", &x["customer"])
                        && p.filter_matches("payment_intent", &x["payment_intent"])
                        && p.filter_matches("subscription", &x["subscription"])
                        && p.filter_matches("status", &x["status"])
                })
            }
            ("GET", ["checkout", "sessions", id]) => {
                self.retrieve(&self.sessions, "checkout.session", id)
            }
            ("GET", ["checkout", "sessions", id, "line_items"]) => {
                self.retrieve(&self.sessions, "checkout.session", id)?;
                let items = self.session_items.get(*id).cloned().unwrap_or_default();
                Ok(objects::list(
                    &format!("/v1/checkout/sessions/{id}/line_items"),
                    items,
                    false,
                ))
            }
            ("POST", ["checkout", "sessions", id, "expire"]) => {
                let s = self.retrieve(&self.sessions, "checkout.session", id)?;
                if s["status"] != "open" {
                    return Err(ApiError::invalid(
                        "session",
                        "Only Checkout Sessions with a status of `open` can be expired.",
                    ));
                }
                let mut s = s;
                s["status"] = json!("expired");
                self.sessions.insert(id, s.clone());
                self.emit("checkout.session.expired", s.clone(), None);
                Ok(s)
            }

            ("GET", ["subscriptions"]) => {
                self.list(&self.subscriptions, "/v1/subscriptions", p, |x, p| {
                    let status = p.opt_str("status").ok().flatten();
                    let status_ok = match status.as_deref() {
                        None => x["status"] != "canceled" && x["status"] != "incomplete_expired",
                        Some("all") => true,
                        Some(s) => x["status"] == s,
                    };
                    status_ok
                        && p.filter_matches("customer", &x["customer"])
                        && p.opt_str("price").ok().flatten().is_none_or(|pr| {
                            x["items"]["data"].as_array().is_some_and(|is| {
                                is.iter().any(|i| i["price"]["id"] == pr.as_str())
                            })
                        })
                })
            }
            ("GET", ["subscriptions", id]) => {
                self.retrieve(&self.subscriptions, "subscription", id)
            }
            ("POST", ["subscriptions", id]) => self.update_subscription(id, p),
            ("DELETE", ["subscriptions", id]) => {
                let invoice_now = p.opt_bool("invoice_now")?.unwrap_or(false);
                self.cancel_subscription_request(id, invoice_now)
            }
            ("GET", ["subscription_items"]) => {
                let sub_id = p.str("subscription")?;
                let sub = self.retrieve(&self.subscriptions, "subscription", &sub_id)?;
                Ok(sub["items"].clone())
            }
            ("POST", ["subscription_items", id]) => self.update_subscription_item(id, p),
            ("GET", ["subscription_items", id]) => self
                .subscription_item(id)
                .ok_or_else(|| ApiError::no_such("subscription_item", id, "id")),

            ("GET", ["invoices"]) => self.list(&self.invoices, "/v1/invoices", p, |x, p| {
                p.filter_matches("customer", &x["customer"])
                    && p.filter_matches("status", &x["status"])
                    && p.filter_matches(
                        "subscription",
                        &x["parent"]["subscription_details"]["subscription"],
                    )
            }),
            ("GET", ["invoices", id]) => self.retrieve(&self.invoices, "invoice", id),
            ("GET", ["invoices", id, "lines"]) => {
                Ok(self.retrieve(&self.invoices, "invoice", id)?["lines"].clone())
            }
            ("POST", ["invoices", id, "pay"]) => {
                let inv = self.retrieve(&self.invoices, "invoice", id)?;
                if inv["status"] != "open" {
                    return Err(ApiError::invalid(
                        "invoice",
                        format!(
                            "Invoice is already {}.",
                            inv["status"].as_str().unwrap_or("")
                        ),
                    )
                    .with_code("invoice_not_editable"));
                }
                self.attempt_payment(id);
                let inv = self.retrieve(&self.invoices, "invoice", id)?;
                if inv["status"] != "paid" {
                    return Err(ApiError::card_declined());
                }
                Ok(inv)
            }

            // `type` (a `*` wildcard allowed) or `types[]` (up to 20 exact types), never both
            // (https://docs.stripe.com/api/events/list).
            ("GET", ["events"]) => {
                let types = p.str_list("types")?;
                if p.get("type").is_some() && !types.is_empty() {
                    return Err(ApiError::invalid(
                        "types",
                        "You may only specify one of these parameters: type, types.",
                    ));
                }
                if types.len() > 20 {
                    return Err(ApiError::invalid(
                        "types",
                        "You may specify at most 20 event types.",
                    ));
                }
                self.list(&self.events, "/v1/events", p, |x, p| {
                    let t = x["type"].as_str().unwrap_or_default();
                    let single = p.opt_str("type").ok().flatten().is_none_or(|want| {
                        match want.strip_suffix('*') {
                            Some(prefix) => t.starts_with(prefix),
                            None => t == want,
                        }
                    });
                    single && (types.is_empty() || types.iter().any(|w| w == t))
                })
            }
            ("GET", ["events", id]) => self.retrieve(&self.events, "event", id),
            _ => Err(ApiError::unrecognized_url(method, path)),
        }?;
        self.expand(v, &p.expand())
    }

    fn retrieve(&self, table: &Table, kind: &str, id: &str) -> ApiResult<Value> {
        table
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::no_such(kind, id, "id"))
    }

    /// Cursor pagination as Stripe does it: newest first, `limit` 1–100 (default 10),
    /// `starting_after` / `ending_before` object ids.
    fn list(
        &self,
        table: &Table,
        url: &str,
        p: &Params,
        keep: impl Fn(&Value, &Params) -> bool,
    ) -> ApiResult<Value> {
        let limit = p.opt_i64("limit")?.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "This value must be between 1 and 100.",
            ));
        }
        // A cursor names an object of the list's kind; an id that does not exist is Stripe's
        // `resource_missing` on that parameter (https://docs.stripe.com/api/pagination), not an
        // empty page. The cursor object may itself be filtered out: its place in creation order
        // still splits the list.
        let cursor = |name: &str| -> ApiResult<Option<usize>> {
            let Some(id) = p.opt_str(name)? else {
                return Ok(None);
            };
            let Some(pos) = table.newest_first().position(|v| v["id"] == id.as_str()) else {
                let kind = table
                    .newest_first()
                    .next()
                    .and_then(|v| v["object"].as_str())
                    .unwrap_or("object")
                    .to_string();
                return Err(ApiError::no_such(&kind, &id, name));
            };
            // the number of kept objects newer than the cursor
            Ok(Some(
                table
                    .newest_first()
                    .take(pos)
                    .filter(|v| keep(v, p))
                    .count(),
            ))
        };
        let after = cursor("starting_after")?;
        let before = cursor("ending_before")?;
        let all: Vec<&Value> = table.newest_first().filter(|v| keep(v, p)).collect();
        let (mut page, has_more): (Vec<&Value>, bool) = if let Some(newer) = after {
            let cursor_kept = p
                .opt_str("starting_after")?
                .is_some_and(|id| all.get(newer).is_some_and(|v| v["id"] == id.as_str()));
            let pos = (newer + usize::from(cursor_kept)).min(all.len());
            let rest = &all[pos..];
            (
                rest.iter().take(limit as usize).copied().collect(),
                rest.len() > limit as usize,
            )
        } else if let Some(pos) = before {
            let head = &all[..pos.min(all.len())];
            let start = head.len().saturating_sub(limit as usize);
            (head[start..].to_vec(), start > 0)
        } else {
            (
                all.iter().take(limit as usize).copied().collect(),
                all.len() > limit as usize,
            )
        };
        let data: Vec<Value> = page
            .drain(..)
            .map(|v| {
                if v["object"] == "price" {
                    objects::price_view(v, false)
                } else {
                    v.clone()
                }
            })
            .collect();
        Ok(objects::list(url, data, has_more))
    }

    /// Stripe's search query language, the subset tollgate needs: clauses `field:'value'`
    /// joined by `AND`, on `email`, `name`, `active`, `lookup_key`, `product`, `metadata['key']`.
    fn search(&self, table: &Table, url: &str, p: &Params) -> ApiResult<Value> {
        let query = p.str("query")?;
        let mut clauses = vec![];
        for clause in query.split(" AND ").map(str::trim) {
            let (field, value) = clause.split_once(':').ok_or_else(|| {
                ApiError::invalid("query", format!("Unsupported search clause `{clause}`."))
            })?;
            let value = value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string();
            let path: Vec<String> = match field.trim().strip_prefix("metadata[") {
                Some(rest) => vec![
                    "metadata".into(),
                    rest.trim_end_matches(']')
                        .trim_matches(|c| c == '\'' || c == '"')
                        .to_string(),
                ],
                None => vec![field.trim().to_string()],
            };
            clauses.push((path, value));
        }
        let data: Vec<Value> = table
            .newest_first()
            .filter(|x| {
                clauses.iter().all(|(path, value)| {
                    let field = path.iter().fold(*x, |v, k| &v[k.as_str()]);
                    match field {
                        Value::String(s) => s == value,
                        Value::Bool(b) => b.to_string() == *value,
                        Value::Number(n) => n.to_string() == *value,
                        _ => false,
                    }
                })
            })
            .map(|v| {
                if v["object"] == "price" {
                    objects::price_view(v, false)
                } else {
                    v.clone()
                }
            })
            .collect();
        // Search pages with an opaque `page` cursor: each result names the next one in
        // `next_page` while `has_more` is true, and `next_page` is null on the last page
        // (https://docs.stripe.com/search#pagination, https://docs.stripe.com/api/pagination/search).
        let limit = p.opt_i64("limit")?.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "This value must be between 1 and 100.",
            ));
        }
        let limit = limit as usize;
        let offset = match p.opt_str("page")? {
            None => 0,
            Some(page) => page
                .strip_prefix(SEARCH_PAGE_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| ApiError::invalid("page", format!("Invalid page: {page}")))?,
        };
        let has_more = data.len() > offset + limit;
        let next_page = if has_more {
            json!(format!("{SEARCH_PAGE_PREFIX}{}", offset + limit))
        } else {
            Value::Null
        };
        Ok(json!({
            "object": "search_result",
            "data": data.into_iter().skip(offset).take(limit).collect::<Vec<_>>(),
            "has_more": has_more, "next_page": next_page, "total_count": null, "url": url
        }))
    }

    /// `expand[]`: each path names expandable fields, `data.` walking into a list. A path that
    /// does not name an expandable field is Stripe's 400 "This property cannot be expanded"
    /// (https://docs.stripe.com/api/expanding_objects).
    fn expand(&self, mut v: Value, paths: &[String]) -> ApiResult<Value> {
        for (n, path) in paths.iter().enumerate() {
            let segs: Vec<&str> = path.split('.').collect();
            if let Err(field) = self.expand_path(&mut v, &segs) {
                return Err(ApiError::invalid(
                    format!("expand[{n}]"),
                    format!("This property cannot be expanded ({field})."),
                ));
            }
        }
        Ok(v)
    }

    fn expand_path<'p>(&self, v: &mut Value, segs: &[&'p str]) -> Result<(), &'p str> {
        let Some((first, rest)) = segs.split_first() else {
            return Ok(());
        };
        if *first == "data"
            && let Some(items) = v["data"].as_array_mut()
        {
            if rest.is_empty() {
                return Err(first);
            }
            for i in items {
                self.expand_path(i, rest)?;
            }
            return Ok(());
        }
        if !v.is_object() {
            return Err(first);
        }
        match *first {
            "tiers" if v["object"] == "price" => {
                if let Some(stored) = v["id"].as_str().and_then(|id| self.prices.get(id)) {
                    v["tiers"] = stored["tiers"].clone();
                }
            }
            "line_items" if v["object"] == "checkout.session" => {
                let id = v["id"].as_str().unwrap_or_default();
                let items = self.session_items.get(id).cloned().unwrap_or_default();
                v["line_items"] = objects::list(
                    &format!("/v1/checkout/sessions/{id}/line_items"),
                    items,
                    false,
                );
            }
            field => match v.get(field) {
                // an expandable field that is unset stays null, as at Stripe
                Some(Value::Null) if EXPANDABLE_WHEN_NULL.contains(&field) => return Ok(()),
                Some(Value::String(id)) => {
                    let id = id.clone();
                    match self.lookup(&id) {
                        Some(obj) => v[field] = obj,
                        None => return Err(first),
                    }
                }
                // already expanded (by an earlier path)
                Some(Value::Object(o)) if o.contains_key("id") => {}
                _ => return Err(first),
            },
        }
        if !rest.is_empty() {
            self.expand_path(&mut v[*first], rest)?;
        }
        Ok(())
    }

    fn create_customer(&mut self, p: &Params) -> ApiResult<Value> {
        let id = new_id("cus");
        let fields = CustomerFields {
            email: p.nullable_str("email")?.unwrap_or(Value::Null),
            name: p.nullable_str("name")?.unwrap_or(Value::Null),
            description: p.nullable_str("description")?.unwrap_or(Value::Null),
            phone: p.nullable_str("phone")?.unwrap_or(Value::Null),
            metadata: p.merge_metadata(&json!({}))?,
        };
        let c = objects::customer(&id, self.now, &fields);
        self.customers.insert(&id, c.clone());
        self.emit("customer.created", c.clone(), None);
        Ok(c)
    }

    fn update_customer(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let mut c = self.retrieve(&self.customers, "customer", id)?;
        let before = c.clone();
        for f in ["email", "name", "description", "phone"] {
            if let Some(v) = p.nullable_str(f)? {
                c[f] = v;
            }
        }
        c["metadata"] = p.merge_metadata(&c["metadata"])?;
        self.customers.insert(id, c.clone());
        if c != before {
            self.emit("customer.updated", c.clone(), Some(changed(&before, &c)));
        }
        Ok(c)
    }

    fn create_balance_txn(&mut self, customer: &str, p: &Params) -> ApiResult<Value> {
        let c = self.retrieve(&self.customers, "customer", customer)?;
        let amount = p
            .opt_i64("amount")?
            .ok_or_else(|| ApiError::missing("amount"))?;
        let currency = p.str("currency")?.to_lowercase();
        let ending = c["balance"].as_i64().unwrap_or(0) + amount;
        let id = new_id("cbtxn");
        let metadata = p.merge_metadata(&json!({}))?;
        let tx = objects::balance_transaction(objects::BalanceTxnInit {
            id: &id,
            created: self.now,
            customer,
            amount,
            currency: &currency,
            ending_balance: ending,
            kind: "adjustment",
            description: p.nullable_str("description")?.unwrap_or(Value::Null),
            invoice: Value::Null,
            metadata,
        });
        self.balance_txns.insert(&id, tx.clone());
        let c = self.customers.get_mut(customer).expect("checked");
        c["balance"] = json!(ending);
        if c["currency"].is_null() {
            c["currency"] = json!(currency);
        }
        let c = c.clone();
        self.emit(
            "customer.updated",
            c,
            Some(json!({"balance": ending - amount})),
        );
        Ok(tx)
    }

    fn create_product(&mut self, p: &Params) -> ApiResult<Value> {
        let name = p.str("name")?;
        let id = match p.opt_str("id")? {
            Some(id) if self.products.contains(&id) => {
                return Err(
                    ApiError::invalid("id", format!("Product already exists: {id}"))
                        .with_code("resource_already_exists"),
                );
            }
            Some(id) => id,
            None => new_id("prod"),
        };
        let mut prod = objects::product(&id, self.now, &name);
        apply_product_fields(&mut prod, p)?;
        self.products.insert(&id, prod.clone());
        self.emit("product.created", prod.clone(), None);
        Ok(prod)
    }

    fn update_product(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let mut prod = self.retrieve(&self.products, "product", id)?;
        let before = prod.clone();
        if let Some(name) = p.opt_str("name")? {
            prod["name"] = json!(name);
        }
        apply_product_fields(&mut prod, p)?;
        if let Some(dp) = p.nullable_str("default_price")? {
            if let Some(pid) = dp.as_str() {
                self.retrieve(&self.prices, "price", pid)?;
            }
            prod["default_price"] = dp;
        }
        if prod != before {
            prod["updated"] = json!(self.now);
            self.emit(
                "product.updated",
                prod.clone(),
                Some(changed(&before, &prod)),
            );
        }
        self.products.insert(id, prod.clone());
        Ok(prod)
    }

    fn create_price(&mut self, p: &Params) -> ApiResult<Value> {
        let currency = p.str("currency")?.to_lowercase();
        let product = match (p.opt_str("product")?, p.get("product_data")) {
            (Some(id), _) => {
                self.retrieve(&self.products, "product", &id)
                    .map_err(|_| ApiError::no_such("product", &id, "product"))?;
                id
            }
            (None, Some(_)) => {
                let pd = p.sub("product_data");
                let id = new_id("prod");
                let mut prod = objects::product(
                    &id,
                    self.now,
                    &pd.str("name")
                        .map_err(|_| ApiError::missing("product_data[name]"))?,
                );
                prod["metadata"] = pd.merge_metadata(&json!({}))?;
                self.products.insert(&id, prod.clone());
                self.emit("product.created", prod, None);
                id
            }
            (None, None) => return Err(ApiError::missing("product")),
        };
        let scheme = p
            .opt_str("billing_scheme")?
            .unwrap_or_else(|| "per_unit".into());
        let recurring = match p.get("recurring") {
            None => Value::Null,
            Some(_) => {
                let r = p.sub("recurring");
                let interval = r
                    .str("interval")
                    .map_err(|_| ApiError::missing("recurring[interval]"))?;
                if !["day", "week", "month", "year"].contains(&interval.as_str()) {
                    return Err(ApiError::invalid(
                        "recurring[interval]",
                        "Invalid recurring[interval]: must be one of day, week, month, or year",
                    ));
                }
                let usage_type = r
                    .opt_str("usage_type")?
                    .unwrap_or_else(|| "licensed".into());
                let meter = r.opt_str("meter")?;
                if usage_type == "metered" {
                    // Since 2025-03-31.basil a metered price must be backed by a Billing Meter.
                    let m = meter
                        .as_deref()
                        .ok_or_else(|| ApiError::missing("recurring[meter]"))?;
                    self.retrieve(&self.meters, "billing.meter", m)
                        .map_err(|_| ApiError::no_such("billing meter", m, "recurring[meter]"))?;
                } else if meter.is_some() {
                    return Err(ApiError::invalid(
                        "recurring[meter]",
                        "A meter can only be set on a price with `recurring[usage_type]=metered`.",
                    ));
                }
                json!({
                    "interval": interval,
                    "interval_count": r.opt_u64("interval_count")?.unwrap_or(1),
                    "meter": meter,
                    "trial_period_days": null,
                    "usage_type": usage_type
                })
            }
        };
        let mut price = json!({
            "object": "price",
            "active": p.opt_bool("active")?.unwrap_or(true),
            "billing_scheme": scheme,
            "created": self.now,
            "currency": currency,
            "custom_unit_amount": null,
            "livemode": false,
            "lookup_key": null,
            "metadata": p.merge_metadata(&json!({}))?,
            "nickname": p.nullable_str("nickname")?.unwrap_or(Value::Null),
            "product": product,
            "recurring": recurring,
            "tax_behavior": p.opt_str("tax_behavior")?.unwrap_or_else(|| "unspecified".into()),
            "tiers": null,
            "tiers_mode": null,
            "transform_quantity": null,
            "type": if recurring.is_null() { "one_time" } else { "recurring" },
            "unit_amount": null,
            "unit_amount_decimal": null
        });
        if scheme == "tiered" {
            let mode = p
                .opt_str("tiers_mode")?
                .ok_or_else(|| ApiError::missing("tiers_mode"))?;
            if mode != "graduated" && mode != "volume" {
                return Err(ApiError::invalid(
                    "tiers_mode",
                    "Invalid tiers_mode: must be one of graduated or volume",
                ));
            }
            if p.get("unit_amount").is_some() || p.get("unit_amount_decimal").is_some() {
                return Err(ApiError::invalid(
                    "unit_amount",
                    "You may only specify one of these parameters: unit_amount, tiers.",
                ));
            }
            if p.get("transform_quantity").is_some() {
                return Err(ApiError::invalid(
                    "transform_quantity",
                    "transform_quantity cannot be used with tiered prices.",
                ));
            }
            price["tiers"] = Value::Array(parse_tiers(p)?);
            price["tiers_mode"] = json!(mode);
        } else if scheme == "per_unit" {
            if p.get("tiers").is_some() {
                return Err(ApiError::invalid(
                    "tiers",
                    "Tiers may only be specified for `billing_scheme=tiered`.",
                ));
            }
            let unit = amount_pair(p, "unit_amount", "unit_amount_decimal")?
                .ok_or_else(|| ApiError::missing("unit_amount"))?;
            price["unit_amount"] = unit.0;
            price["unit_amount_decimal"] = unit.1;
            if p.get("transform_quantity").is_some() {
                let t = p.sub("transform_quantity");
                let divide_by = t
                    .opt_u64("divide_by")?
                    .filter(|d| *d > 0)
                    .ok_or_else(|| ApiError::missing("transform_quantity[divide_by]"))?;
                let round = t
                    .str("round")
                    .map_err(|_| ApiError::missing("transform_quantity[round]"))?;
                if round != "up" && round != "down" {
                    return Err(ApiError::invalid(
                        "transform_quantity[round]",
                        "Invalid transform_quantity[round]: must be one of up or down",
                    ));
                }
                price["transform_quantity"] = json!({"divide_by": divide_by, "round": round});
            }
        } else {
            return Err(ApiError::invalid(
                "billing_scheme",
                "Invalid billing_scheme: must be one of per_unit or tiered",
            ));
        }
        let id = new_id("price");
        price["id"] = json!(id);
        if let Some(key) = p.opt_str("lookup_key")? {
            self.claim_lookup_key(
                &id,
                &key,
                p.opt_bool("transfer_lookup_key")?.unwrap_or(false),
            )?;
            price["lookup_key"] = json!(key);
        }
        self.prices.insert(&id, price.clone());
        self.emit("price.created", objects::price_view(&price, false), None);
        Ok(objects::price_view(&price, false))
    }

    /// A lookup key names one price; `transfer_lookup_key` moves it from the price holding it.
    fn claim_lookup_key(&mut self, id: &str, key: &str, transfer: bool) -> ApiResult<()> {
        let holder = self
            .prices
            .newest_first()
            .find(|x| x["lookup_key"] == key && x["id"] != id)
            .and_then(|x| x["id"].as_str().map(str::to_string));
        if let Some(holder) = holder {
            if !transfer {
                return Err(ApiError::invalid(
                    "lookup_key",
                    format!("A price (`{holder}`) already uses that lookup key."),
                )
                .with_code("lookup_key_already_exists"));
            }
            let old = self.prices.get_mut(&holder).expect("found");
            old["lookup_key"] = Value::Null;
            let view = objects::price_view(old, false);
            self.emit("price.updated", view, Some(json!({"lookup_key": key})));
        }
        Ok(())
    }

    fn update_price(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let before = self.retrieve(&self.prices, "price", id)?;
        for immutable in [
            "unit_amount",
            "unit_amount_decimal",
            "currency",
            "recurring",
            "tiers",
            "tiers_mode",
            "product",
            "billing_scheme",
            "transform_quantity",
        ] {
            if p.get(immutable).is_some() {
                return Err(ApiError::unknown_param(immutable));
            }
        }
        let mut price = before.clone();
        if let Some(active) = p.opt_bool("active")? {
            price["active"] = json!(active);
        }
        if let Some(nick) = p.nullable_str("nickname")? {
            price["nickname"] = nick;
        }
        if let Some(key) = p.nullable_str("lookup_key")? {
            if let Some(k) = key.as_str() {
                self.claim_lookup_key(id, k, p.opt_bool("transfer_lookup_key")?.unwrap_or(false))?;
            }
            price["lookup_key"] = key;
        }
        price["metadata"] = p.merge_metadata(&price["metadata"])?;
        self.prices.insert(id, price.clone());
        if price != before {
            self.emit(
                "price.updated",
                objects::price_view(&price, false),
                Some(changed(&before, &price)),
            );
        }
        Ok(objects::price_view(&price, false))
    }

    fn create_meter(&mut self, p: &Params) -> ApiResult<Value> {
        let display_name = p.str("display_name")?;
        let event_name = p.str("event_name")?;
        let agg = p.sub("default_aggregation");
        let formula = agg
            .str("formula")
            .map_err(|_| ApiError::missing("default_aggregation[formula]"))?;
        if !["sum", "count", "last"].contains(&formula.as_str()) {
            return Err(ApiError::invalid(
                "default_aggregation[formula]",
                "Invalid default_aggregation[formula]: must be one of count, last, or sum",
            ));
        }
        if self
            .meters
            .newest_first()
            .any(|m| m["event_name"] == event_name.as_str() && m["status"] == "active")
        {
            return Err(ApiError::invalid(
                "event_name",
                format!("An active meter with event_name `{event_name}` already exists."),
            )
            .with_code("resource_already_exists"));
        }
        let customer_key = p
            .sub("customer_mapping")
            .opt_str("event_payload_key")?
            .unwrap_or_else(|| "stripe_customer_id".into());
        let value_key = p
            .sub("value_settings")
            .opt_str("event_payload_key")?
            .unwrap_or_else(|| "value".into());
        let id = new_id("mtr");
        let m = objects::meter(
            &id,
            self.now,
            &display_name,
            &event_name,
            &formula,
            &customer_key,
            &value_key,
        );
        self.meters.insert(&id, m.clone());
        Ok(m)
    }

    fn update_meter(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let mut m = self.retrieve(&self.meters, "billing.meter", id)?;
        if let Some(d) = p.opt_str("display_name")? {
            m["display_name"] = json!(d);
            m["updated"] = json!(self.now);
        }
        self.meters.insert(id, m.clone());
        Ok(m)
    }

    fn set_meter_status(&mut self, id: &str, status: &str) -> ApiResult<Value> {
        let mut m = self.retrieve(&self.meters, "billing.meter", id)?;
        m["status"] = json!(status);
        m["status_transitions"]["deactivated_at"] = if status == "inactive" {
            json!(self.now)
        } else {
            Value::Null
        };
        m["updated"] = json!(self.now);
        self.meters.insert(id, m.clone());
        Ok(m)
    }

    fn meter_summaries(&self, id: &str, p: &Params) -> ApiResult<Value> {
        self.retrieve(&self.meters, "billing.meter", id)?;
        let customer = p.str("customer")?;
        let start = p
            .opt_i64("start_time")?
            .ok_or_else(|| ApiError::missing("start_time"))?;
        let end = p
            .opt_i64("end_time")?
            .ok_or_else(|| ApiError::missing("end_time"))?;
        let value = self.metered_quantity(&customer, id, (start, end));
        let summary = json!({
            "id": new_id("mtrusg"), "object": "billing.meter_event_summary", "aggregated_value": value as f64,
            "end_time": end, "livemode": false, "meter": id, "start_time": start
        });
        Ok(objects::list(
            &format!("/v1/billing/meters/{id}/event_summaries"),
            vec![summary],
            false,
        ))
    }

    /// `POST /v1/billing/meter_events`. What Stripe checks when the request arrives: the
    /// parameters' shape, the timestamp window (35 days back, 5 minutes ahead) and identifier
    /// uniqueness (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api).
    /// What its docs list as asynchronous errors, reported later by a
    /// `v1.billing.meter.error_report_triggered` event (https://docs.stripe.com/api/v2/core/events/event-types)
    /// — `no_meter`, `archived_meter`, `meter_event_no_customer_defined`,
    /// `meter_event_customer_not_found`, `meter_event_value_not_found`,
    /// `meter_event_invalid_value` — is accepted here (200) and never billed; the emulator logs
    /// it in `meter_error_reports` (`GET /_emulator/meter_error_reports`). A value is any whole
    /// number, negative ones included: the usage guide corrects over-reported usage with a
    /// negative value.
    fn create_meter_event(&mut self, p: &Params) -> ApiResult<Value> {
        let event_name = p.str("event_name")?;
        if p.get("payload").is_none() {
            return Err(ApiError::missing("payload"));
        }
        let payload = p.sub("payload");
        if !payload.0.is_object() {
            return Err(ApiError::invalid("payload", "Invalid hash"));
        }
        let meter = self
            .meters
            .newest_first()
            .filter(|m| m["event_name"] == event_name.as_str())
            .max_by_key(|m| m["status"] == "active")
            .cloned();
        let customer_key = meter
            .as_ref()
            .and_then(|m| m["customer_mapping"]["event_payload_key"].as_str())
            .unwrap_or("stripe_customer_id")
            .to_string();
        let value_key = meter
            .as_ref()
            .and_then(|m| m["value_settings"]["event_payload_key"].as_str())
            .unwrap_or("value")
            .to_string();
        let customer = payload.opt_str(&customer_key)?;
        let raw_value = payload.opt_str(&value_key)?;
        let value = raw_value.as_deref().and_then(|v| v.parse::<i64>().ok());
        let async_error: Option<(&'static str, String)> = match &meter {
            None => Some((
                "no_meter",
                format!("No meter with event_name `{event_name}`."),
            )),
            Some(m) if m["status"] != "active" => Some((
                "archived_meter",
                format!("The meter for event_name `{event_name}` is deactivated."),
            )),
            _ => match (&customer, &raw_value) {
                (None, _) => Some((
                    "meter_event_no_customer_defined",
                    format!("payload[{customer_key}] is missing."),
                )),
                (Some(c), _) if !self.customers.contains(c) => Some((
                    "meter_event_customer_not_found",
                    format!("No such customer: '{c}'"),
                )),
                (_, None) => Some((
                    "meter_event_value_not_found",
                    format!("payload[{value_key}] is missing."),
                )),
                (_, Some(v)) if value.is_none() => Some((
                    "meter_event_invalid_value",
                    format!("The value `{v}` is not a whole number."),
                )),
                _ => None,
            },
        };
        let timestamp = p.opt_i64("timestamp")?.unwrap_or(self.now);
        if timestamp < self.now - METER_EVENT_MAX_AGE_SECS {
            return Err(ApiError::invalid(
                "timestamp",
                "Timestamp must be within the past 35 calendar days.",
            )
            .with_code("timestamp_too_far_in_past"));
        }
        if timestamp > self.now + METER_EVENT_MAX_FUTURE_SECS {
            return Err(ApiError::invalid(
                "timestamp",
                "Timestamp must not be more than 5 minutes in the future.",
            )
            .with_code("timestamp_in_future"));
        }
        let now = self.now;
        self.identifiers
            .retain(|_, created| *created > now - IDENTIFIER_WINDOW_SECS);
        let identifier = p.opt_str("identifier")?.unwrap_or_else(|| new_id("mev"));
        if self.identifiers.contains_key(&identifier) {
            return Err(ApiError::invalid(
                "identifier",
                format!("An event already exists with identifier {identifier}."),
            )
            .with_code("resource_already_exists"));
        }
        self.identifiers.insert(identifier.clone(), now);
        match (async_error, customer, value) {
            (Some((code, message)), _, _) => self.meter_error_reports.push(MeterErrorReport {
                code: code.to_string(),
                message,
                identifier: identifier.clone(),
                event_name: event_name.clone(),
                meter: meter
                    .as_ref()
                    .and_then(|m| m["id"].as_str())
                    .map(str::to_string),
                at: now,
            }),
            (None, Some(customer), Some(value)) => self.meter_events.push(StoredMeterEvent {
                event_name: event_name.clone(),
                customer,
                value,
                timestamp,
                created: now,
            }),
            (None, _, _) => unreachable!("no async error implies a customer and a value"),
        }
        Ok(objects::meter_event(
            now,
            &event_name,
            &identifier,
            &payload.0,
            timestamp,
        ))
    }

    /// `line_items[n][price_data]`: Stripe creates a Price for the session, archived at once
    /// so that it never shows up in catalog listings.
    fn inline_price(&mut self, pd: &Params, n: usize) -> ApiResult<String> {
        let price = self.create_price(pd).map_err(|mut e| {
            e.param = e.param.map(|p| {
                let (head, tail) = p
                    .split_once('[')
                    .map(|(h, t)| (h.to_string(), format!("[{t}")))
                    .unwrap_or((p.clone(), String::new()));
                format!("line_items[{n}][price_data][{head}]{tail}")
            });
            e
        })?;
        let id = price["id"].as_str().unwrap_or_default().to_string();
        if let Some(stored) = self.prices.get_mut(&id) {
            stored["active"] = json!(false);
        }
        Ok(id)
    }

    fn create_session(&mut self, p: &Params) -> ApiResult<Value> {
        let mode = p.str("mode")?;
        if mode != "subscription" && mode != "payment" {
            return Err(ApiError::invalid(
                "mode",
                "Invalid mode: emulated modes are payment and subscription",
            ));
        }
        let customer = p.opt_str("customer")?;
        if let Some(c) = &customer {
            self.retrieve(&self.customers, "customer", c)
                .map_err(|_| ApiError::no_such("customer", c, "customer"))?;
        }
        let line_items = p.array("line_items")?;
        if line_items.is_empty() {
            return Err(ApiError::missing("line_items"));
        }
        let mut items = vec![];
        let mut amount = 0i64;
        let mut currency: Option<String> = None;
        for (n, li) in line_items.iter().enumerate() {
            let pid = match (li.opt_str("price")?, li.get("price_data")) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        format!("line_items[{n}][price_data]"),
                        "You may only specify one of these parameters: price, price_data.",
                    ));
                }
                (Some(pid), None) => pid,
                (None, Some(_)) => self.inline_price(&li.sub("price_data"), n)?,
                (None, None) => return Err(ApiError::missing(&format!("line_items[{n}][price]"))),
            };
            let price = self.prices.get(&pid).cloned().ok_or_else(|| {
                ApiError::no_such("price", &pid, &format!("line_items[{n}][price]"))
            })?;
            let inline = li.get("price_data").is_some();
            if price["active"] != true && !inline {
                return Err(ApiError::invalid(
                    format!("line_items[{n}][price]"),
                    format!("The price `{pid}` is not active."),
                ));
            }
            let metered = price["recurring"]["usage_type"] == "metered";
            let quantity = li.opt_u64("quantity")?;
            if metered && quantity.is_some() {
                return Err(ApiError::invalid(
                    format!("line_items[{n}][quantity]"),
                    "Quantity should not be specified where usage_type is `metered`.",
                ));
            }
            if !metered && quantity.is_none() {
                return Err(ApiError::missing(&format!("line_items[{n}][quantity]")));
            }
            if mode == "payment" && !price["recurring"].is_null() {
                return Err(ApiError::invalid(
                    format!("line_items[{n}][price]"),
                    "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.",
                ));
            }
            let c = price["currency"].as_str().unwrap_or("usd").to_string();
            if currency.as_ref().is_some_and(|x| *x != c) {
                return Err(ApiError::invalid(
                    format!("line_items[{n}][price]"),
                    "All prices must use the same currency.",
                ));
            }
            currency = Some(c);
            let q = quantity.unwrap_or(0);
            let line_amount = if metered {
                0
            } else {
                crate::arithmetic::Scheme::from_price(&price).amount(q)
            };
            amount += line_amount;
            let name = self
                .products
                .get(price["product"].as_str().unwrap_or_default())
                .and_then(|x| x["name"].as_str())
                .unwrap_or("Product")
                .to_string();
            let mut item = objects::checkout_item(&new_id("li"), &price, q, line_amount, &name);
            if metered {
                item["quantity"] = Value::Null;
            }
            items.push(item);
        }
        if mode == "subscription" && !items.iter().any(|i| !i["price"]["recurring"].is_null()) {
            return Err(ApiError::invalid(
                "line_items",
                "You must provide at least one recurring price in `subscription` mode when using prices.",
            ));
        }
        let trial_days = match mode.as_str() {
            "subscription" => p.sub("subscription_data").opt_u64("trial_period_days")?,
            _ => None,
        };
        if let Some(days) = trial_days {
            if !(1..=730).contains(&days) {
                return Err(ApiError::invalid(
                    "subscription_data[trial_period_days]",
                    "The trial period must be between 1 and 730 days.",
                ));
            }
            // During a trial only one-time items (a setup fee) are due at checkout.
            amount = items
                .iter()
                .filter(|i| i["price"]["recurring"].is_null())
                .filter_map(|i| i["amount_total"].as_i64())
                .sum();
        }
        let success_url = p.opt_str("success_url")?;
        if p.opt_str("ui_mode")?.is_none_or(|m| m == "hosted") && success_url.is_none() {
            return Err(ApiError::missing("success_url"));
        }
        let id = format!("cs_test_{}", new_id("x").trim_start_matches("x_"));
        let session = objects::checkout_session(SessionInit {
            id: &id,
            created: self.now,
            expires_at: p.opt_i64("expires_at")?.unwrap_or(self.now + 24 * 3600),
            mode: &mode,
            url: format!("{}/checkout/{id}", self.base_url),
            customer: json!(customer),
            customer_email: p.nullable_str("customer_email")?.unwrap_or(Value::Null),
            currency: json!(currency),
            amount,
            metadata: p.merge_metadata(&json!({}))?,
            client_reference_id: p
                .nullable_str("client_reference_id")?
                .unwrap_or(Value::Null),
            success_url: json!(success_url),
            cancel_url: p.nullable_str("cancel_url")?.unwrap_or(Value::Null),
            invoice_creation_enabled: p
                .sub("invoice_creation")
                .opt_bool("enabled")?
                .unwrap_or(false),
        });
        self.session_items.insert(id.clone(), items);
        let sub_meta = p.sub("subscription_data").merge_metadata(&json!({}))?;
        self.session_subscription_metadata
            .insert(id.clone(), sub_meta);
        if let Some(days) = trial_days {
            self.session_trial_days.insert(id.clone(), days);
        }
        self.sessions.insert(&id, session.clone());
        Ok(session)
    }

    /// `POST /v1/subscription_items/{id}`: a seat count change, as an update of its subscription.
    fn update_subscription_item(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let sub_id = self
            .item_owner
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::no_such("subscription_item", id, "id"))?;
        let mut change = serde_json::Map::new();
        change.insert("id".into(), json!(id));
        if let Some(q) = p.get("quantity") {
            change.insert("quantity".into(), q.clone());
        }
        self.update_subscription(&sub_id, &Params(json!({"items": [change]})))?;
        let mut item = self.subscription_item(id).expect("owned item");
        item["metadata"] = p.merge_metadata(&item["metadata"])?;
        if let Some(data) = self
            .subscriptions
            .get_mut(&sub_id)
            .and_then(|s| s["items"]["data"].as_array_mut())
            && let Some(stored) = data.iter_mut().find(|i| i["id"] == id)
        {
            *stored = item.clone();
        }
        Ok(item)
    }

    fn update_subscription(&mut self, id: &str, p: &Params) -> ApiResult<Value> {
        let before = self.retrieve(&self.subscriptions, "subscription", id)?;
        let mut sub = before.clone();
        if sub["status"] == "canceled"
            && (p.get("cancel_at_period_end").is_some() || p.get("items").is_some())
        {
            return Err(ApiError::invalid(
                "id",
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
        if let Some(flag) = p.opt_bool("cancel_at_period_end")? {
            sub["cancel_at_period_end"] = json!(flag);
            if flag {
                let end = self.sub_clocks.get(id).map(|c| c.current().1);
                sub["cancel_at"] = json!(end);
                sub["canceled_at"] = json!(self.now);
            } else {
                sub["cancel_at"] = Value::Null;
                sub["canceled_at"] = Value::Null;
            }
        }
        sub["metadata"] = p.merge_metadata(&sub["metadata"])?;
        for (n, change) in p.array("items")?.iter().enumerate() {
            let si = change
                .str("id")
                .map_err(|_| ApiError::missing(&format!("items[{n}][id]")))?;
            let q = change.opt_u64("quantity")?;
            let data = sub["items"]["data"].as_array_mut().expect("items list");
            let item = data
                .iter_mut()
                .find(|i| i["id"] == si.as_str())
                .ok_or_else(|| {
                    ApiError::no_such("subscription_item", &si, &format!("items[{n}][id]"))
                })?;
            if let Some(q) = q {
                if item["price"]["recurring"]["usage_type"] == "metered" {
                    return Err(ApiError::invalid(
                        format!("items[{n}][quantity]"),
                        "Quantity should not be specified where usage_type is `metered`.",
                    ));
                }
                item["quantity"] = json!(q);
            }
        }
        self.subscriptions.insert(id, sub.clone());
        if sub != before {
            self.emit(
                "customer.subscription.updated",
                sub.clone(),
                Some(changed(&before, &sub)),
            );
        }
        Ok(sub)
    }
}

/// Expandable id fields of the emulated objects that may be null (`customer` of a session
/// before completion, `latest_invoice`, `default_price`, …).
const EXPANDABLE_WHEN_NULL: &[&str] = &[
    "customer",
    "default_price",
    "invoice",
    "latest_invoice",
    "subscription",
    "default_payment_method",
    "default_source",
    "payment_intent",
    "setup_intent",
    "payment_link",
    "test_clock",
    "schedule",
    "on_behalf_of",
    "application",
    "customer_account",
];

/// Query parameters each GET endpoint takes: Stripe's names, and only those whose meaning the
/// emulator implements (https://docs.stripe.com/api, each endpoint's parameters).
fn get_params(segs: &[&str]) -> &'static [&'static str] {
    const PAGE: [&str; 4] = ["expand", "limit", "starting_after", "ending_before"];
    macro_rules! with_page {
        ($($extra:literal),*) => {
            &[PAGE[0], PAGE[1], PAGE[2], PAGE[3] $(, $extra)*]
        };
    }
    match segs {
        ["customers"] => with_page!("email"),
        ["customers" | "products" | "prices", "search"] => &["expand", "limit", "page", "query"],
        ["customers", _, "balance_transactions"] => with_page!(),
        ["products"] => with_page!("active", "ids"),
        ["prices"] => with_page!("active", "currency", "lookup_keys", "product", "type"),
        ["billing", "meters"] => with_page!("status"),
        ["billing", "meters", _, "event_summaries"] => {
            with_page!("customer", "start_time", "end_time")
        }
        ["checkout", "sessions"] => {
            with_page!("customer", "payment_intent", "status", "subscription")
        }
        ["checkout", "sessions", _, "line_items"] => with_page!(),
        ["subscriptions"] => with_page!("customer", "price", "status"),
        ["subscription_items"] => with_page!("subscription"),
        ["invoices"] => with_page!("customer", "status", "subscription"),
        ["invoices", _, "lines"] => with_page!(),
        ["events"] => with_page!("type", "types"),
        _ => &["expand"],
    }
}

fn active_filter(x: &Value, p: &Params) -> bool {
    p.opt_bool("active")
        .ok()
        .flatten()
        .is_none_or(|a| x["active"] == a)
}

fn apply_product_fields(prod: &mut Value, p: &Params) -> ApiResult<()> {
    if let Some(a) = p.opt_bool("active")? {
        prod["active"] = json!(a);
    }
    for f in [
        "description",
        "unit_label",
        "statement_descriptor",
        "url",
        "tax_code",
    ] {
        if let Some(v) = p.nullable_str(f)? {
            prod[f] = v;
        }
    }
    prod["metadata"] = p.merge_metadata(&prod["metadata"])?;
    Ok(())
}

/// `unit_amount` (integer) or `unit_amount_decimal` (up to 12 decimals), never both.
fn amount_pair(p: &Params, int_name: &str, dec_name: &str) -> ApiResult<Option<(Value, Value)>> {
    match (p.opt_i64(int_name)?, p.opt_decimal(dec_name)?) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            dec_name,
            format!("You may only specify one of these parameters: {int_name}, {dec_name}."),
        )),
        (Some(n), None) if n < 0 => Err(ApiError::invalid(
            int_name,
            "This value must be greater than or equal to 0.",
        )),
        (Some(n), None) => Ok(Some((json!(n), json!(n.to_string())))),
        (None, Some(d)) if d < Decimal::ZERO || d.scale() > 12 => Err(ApiError::invalid(
            dec_name,
            "Invalid decimal: must be non-negative with at most 12 decimal places.",
        )),
        (None, Some(d)) => {
            let int = if d.fract().is_zero() {
                json!(i64::try_from(d.trunc().mantissa()).ok())
            } else {
                Value::Null
            };
            Ok(Some((int, json!(d.to_string()))))
        }
        (None, None) => Ok(None),
    }
}

fn parse_tiers(p: &Params) -> ApiResult<Vec<Value>> {
    let tiers = p.array("tiers")?;
    if tiers.is_empty() {
        return Err(ApiError::missing("tiers"));
    }
    let mut out = vec![];
    let mut last: Option<u64> = None;
    for (n, t) in tiers.iter().enumerate() {
        let up_to =
            match t.opt_str("up_to")?.as_deref() {
                Some("inf") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::invalid(format!("tiers[{n}][up_to]"), "Invalid integer")
                })?),
                None => return Err(ApiError::missing(&format!("tiers[{n}][up_to]"))),
            };
        let is_last = n + 1 == tiers.len();
        if up_to.is_none() != is_last {
            return Err(ApiError::invalid(
                format!("tiers[{n}][up_to]"),
                "Only the last tier may (and must) have `up_to=inf`.",
            ));
        }
        if let (Some(prev), Some(u)) = (last, up_to)
            && u <= prev
        {
            return Err(ApiError::invalid(
                format!("tiers[{n}][up_to]"),
                "Tiers must be in ascending order of `up_to`.",
            ));
        }
        last = up_to;
        let unit =
            amount_pair(t, "unit_amount", "unit_amount_decimal").map_err(|e| prefix_param(e, n))?;
        let flat =
            amount_pair(t, "flat_amount", "flat_amount_decimal").map_err(|e| prefix_param(e, n))?;
        if unit.is_none() && flat.is_none() {
            return Err(ApiError::missing(&format!("tiers[{n}][unit_amount]")));
        }
        let (ua, uad) = unit.unwrap_or((Value::Null, Value::Null));
        let (fa, fad) = flat.unwrap_or((Value::Null, Value::Null));
        out.push(json!({"flat_amount": fa, "flat_amount_decimal": fad, "unit_amount": ua, "unit_amount_decimal": uad, "up_to": up_to}));
    }
    Ok(out)
}

fn prefix_param(mut e: ApiError, n: usize) -> ApiError {
    e.param = e.param.map(|p| format!("tiers[{n}][{p}]"));
    e
}

/// `previous_attributes` of an `*.updated` event: the old values of the top-level fields that changed.
fn changed(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Value::Object(b), Value::Object(a)) = (before, after) {
        for (k, v) in b {
            if a.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Top-level parameters Stripe accepts on each write endpoint (API version 2026-09-30).
fn allowed_params(method: &str, segs: &[&str]) -> Option<&'static [&'static str]> {
    const CUSTOMER: &[&str] = &[
        "address",
        "balance",
        "business_name",
        "cash_balance",
        "coupon",
        "default_source",
        "description",
        "email",
        "expand",
        "individual_name",
        "invoice_prefix",
        "invoice_settings",
        "metadata",
        "name",
        "next_invoice_sequence",
        "payment_method",
        "phone",
        "preferred_locales",
        "promotion_code",
        "shipping",
        "source",
        "tax",
        "tax_exempt",
        "tax_id_data",
        "test_clock",
        "validate",
    ];
    const PRODUCT: &[&str] = &[
        "active",
        "default_price",
        "default_price_data",
        "description",
        "expand",
        "id",
        "images",
        "marketing_features",
        "metadata",
        "name",
        "package_dimensions",
        "shippable",
        "statement_descriptor",
        "tax_code",
        "tax_details",
        "type",
        "unit_label",
        "url",
    ];
    const PRICE_CREATE: &[&str] = &[
        "active",
        "billing_scheme",
        "currency",
        "currency_options",
        "custom_unit_amount",
        "expand",
        "lookup_key",
        "metadata",
        "nickname",
        "product",
        "product_data",
        "recurring",
        "tax_behavior",
        "tiers",
        "tiers_mode",
        "transfer_lookup_key",
        "transform_quantity",
        "unit_amount",
        "unit_amount_decimal",
    ];
    const PRICE_UPDATE: &[&str] = &[
        "active",
        "currency_options",
        "expand",
        "lookup_key",
        "metadata",
        "nickname",
        "tax_behavior",
        "transfer_lookup_key",
        // immutable fields get Stripe's own error from the handler
        "unit_amount",
        "unit_amount_decimal",
        "currency",
        "recurring",
        "tiers",
        "tiers_mode",
        "product",
        "billing_scheme",
        "transform_quantity",
    ];
    const METER_CREATE: &[&str] = &[
        "customer_mapping",
        "default_aggregation",
        "display_name",
        "event_name",
        "event_time_window",
        "expand",
        "value_settings",
    ];
    const SESSION: &[&str] = &[
        "adaptive_pricing",
        "after_expiration",
        "allow_promotion_codes",
        "automatic_tax",
        "billing_address_collection",
        "branding_settings",
        "cancel_url",
        "client_reference_id",
        "consent_collection",
        "currency",
        "custom_fields",
        "custom_text",
        "customer",
        "customer_account",
        "customer_creation",
        "customer_email",
        "customer_update",
        "discounts",
        "excluded_payment_method_types",
        "expand",
        "expires_at",
        "integration_identifier",
        "invoice_creation",
        "line_items",
        "locale",
        "managed_payments",
        "metadata",
        "mode",
        "name_collection",
        "optional_items",
        "origin_context",
        "payment_intent_data",
        "payment_method_collection",
        "payment_method_configuration",
        "payment_method_data",
        "payment_method_options",
        "payment_method_types",
        "permissions",
        "phone_number_collection",
        "redirect_on_completion",
        "return_url",
        "saved_payment_method_options",
        "setup_intent_data",
        "shipping_address_collection",
        "shipping_options",
        "submit_type",
        "subscription_data",
        "success_url",
        "tax_id_collection",
        "ui_mode",
        "wallet_options",
    ];
    const SUBSCRIPTION_UPDATE: &[&str] = &[
        "add_invoice_items",
        "application_fee_percent",
        "automatic_tax",
        "billing_cycle_anchor",
        "billing_schedules",
        "billing_thresholds",
        "cancel_at",
        "cancel_at_period_end",
        "cancellation_details",
        "collection_method",
        "days_until_due",
        "default_payment_method",
        "default_source",
        "default_tax_rates",
        "description",
        "discounts",
        "expand",
        "invoice_settings",
        "items",
        "metadata",
        "off_session",
        "on_behalf_of",
        "pause_collection",
        "payment_behavior",
        "payment_settings",
        "pending_invoice_item_interval",
        "proration_behavior",
        "proration_date",
        "transfer_data",
        "trial_end",
        "trial_from_plan",
        "trial_settings",
    ];
    Some(match (method, segs) {
        ("POST", ["customers"]) | ("POST", ["customers", _]) => CUSTOMER,
        ("POST", ["customers", _, "balance_transactions"]) => {
            &["amount", "currency", "description", "expand", "metadata"]
        }
        ("POST", ["products"]) | ("POST", ["products", _]) => PRODUCT,
        ("POST", ["prices"]) => PRICE_CREATE,
        ("POST", ["prices", _]) => PRICE_UPDATE,
        ("POST", ["billing", "meters"]) => METER_CREATE,
        ("POST", ["billing", "meters", _]) => &["display_name", "expand"],
        ("POST", ["billing", "meters", _, _]) => &["expand"],
        ("POST", ["billing", "meter_events"]) => {
            &["event_name", "expand", "identifier", "payload", "timestamp"]
        }
        ("POST", ["checkout", "sessions"]) => SESSION,
        ("POST", ["checkout", "sessions", _, "expire"]) => &["expand"],
        ("POST", ["refunds"]) => &[
            "amount",
            "charge",
            "expand",
            "metadata",
            "payment_intent",
            "reason",
        ],
        ("POST", ["subscriptions", _]) => SUBSCRIPTION_UPDATE,
        ("POST", ["subscription_items", _]) => &[
            "billing_thresholds",
            "discounts",
            "expand",
            "metadata",
            "off_session",
            "payment_behavior",
            "price",
            "price_data",
            "proration_behavior",
            "proration_date",
            "quantity",
            "tax_rates",
        ],
        ("DELETE", ["subscriptions", _]) => {
            &["cancellation_details", "expand", "invoice_now", "prorate"]
        }
        ("POST", ["invoices", _, "pay"]) => &[
            "expand",
            "forgive",
            "mandate",
            "off_session",
            "paid_out_of_band",
            "payment_method",
            "source",
        ],
        _ => return None,
    })
}
