//! The HTTP API's routes, read from `template.yaml` (each function's `HttpApi` events), so the
//! local stack serves exactly what API Gateway will, and a route added to the template without
//! a local handler is an error at start, not a silent 404.

use http::Method;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// The function that serves a route (by its logical id in the template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Function {
    Checkout,
    StripeWebhook,
    Usage,
}

impl Function {
    fn from_logical_id(id: &str) -> Option<Self> {
        match id {
            "CheckoutFunction" => Some(Self::Checkout),
            "StripeWebhookFunction" => Some(Self::StripeWebhook),
            "UsageFunction" => Some(Self::Usage),
            _ => None,
        }
    }
}

/// One `HttpApi` route: `METHOD /path/{param}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path as the template writes it, with `{name}` segments.
    pub path: String,
    pub function: Function,
}

impl Route {
    /// `"GET /catalog"`: API Gateway's `routeKey`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters when `path` matches this route (`{name}` is one non-empty segment,
    /// as in API Gateway HTTP APIs).
    pub fn matches(&self, method: &Method, path: &str) -> Option<BTreeMap<String, String>> {
        if *method != self.method {
            return None;
        }
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        if want.len() != got.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (w, g) in want.iter().zip(&got) {
            match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) if !g.is_empty() => {
                    params.insert(name.to_string(), (*g).to_string());
                }
                Some(_) => return None,
                None if w == g => {}
                None => return None,
            }
        }
        Some(params)
    }
}

/// Every `HttpApi` route of the template's functions, in template order.
pub fn from_template(template: &str) -> Result<Vec<Route>, String> {
    let doc: Value = serde_yaml::from_str(template).map_err(|e| format!("bad YAML: {e}"))?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or("template has no Resources")?;
    let mut routes = Vec::new();
    for (id, res) in resources {
        let id = id.as_str().unwrap_or_default();
        let Some(events) = res
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
        else {
            continue;
        };
        for (name, ev) in events {
            if ev.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                continue;
            }
            let props = ev
                .get("Properties")
                .ok_or_else(|| format!("{id}.Events.{name:?}: HttpApi event without Properties"))?;
            let field = |f: &str| {
                props
                    .get(f)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{id}.Events.{name:?}: {f} missing"))
            };
            let method = Method::from_bytes(field("Method")?.to_uppercase().as_bytes())
                .map_err(|e| format!("{id}: bad Method: {e}"))?;
            let function = Function::from_logical_id(id).ok_or_else(|| {
                format!(
                    "{id} serves {method} {} but the local stack has no handler for it",
                    field("Path").unwrap_or_default()
                )
            })?;
            routes.push(Route {
                method,
                path: field("Path")?.to_string(),
                function,
            });
        }
    }
    if routes.is_empty() {
        return Err("template defines no HttpApi routes".into());
    }
    Ok(routes)
}

/// The route (and its path parameters) that serves `method path`.
pub fn find<'a>(
    routes: &'a [Route],
    method: &Method,
    path: &str,
) -> Option<(&'a Route, BTreeMap<String, String>)> {
    routes
        .iter()
        .find_map(|r| r.matches(method, path).map(|p| (r, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Resources:
  CheckoutFunction:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        A: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: "/consumers/{consumer_id}/subscriptions"}}
        B: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: post, Path: /checkout/sessions}}
  BillingRunFunction:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Nightly: {Type: ScheduleV2, Properties: {ScheduleExpression: "cron(5 0 * * ? *)"}}
"#;

    #[test]
    fn reads_routes_and_matches_parameters() {
        let routes = from_template(TEMPLATE).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].key(), "POST /checkout/sessions");
        let (r, p) = find(&routes, &Method::GET, "/consumers/acme/subscriptions").unwrap();
        assert_eq!(r.function, Function::Checkout);
        assert_eq!(p["consumer_id"], "acme");
        assert!(find(&routes, &Method::GET, "/consumers//subscriptions").is_none());
        assert!(find(&routes, &Method::POST, "/consumers/acme/subscriptions").is_none());
        assert!(find(&routes, &Method::GET, "/consumers/acme/subscriptions/x").is_none());
    }

    #[test]
    fn a_route_without_a_local_handler_is_an_error() {
        let t = TEMPLATE.replace("CheckoutFunction", "ReportsFunction");
        let err = from_template(&t).unwrap_err();
        assert!(err.contains("ReportsFunction"), "{err}");
    }
}
