"""Stripe's official Python client (stripe on PyPI, pinned in requirements.txt) against the
emulator, over every endpoint tollgate uses and every object the emulator returns.

Checks, each counted as one passed or failed check:
  - every call parses into the client's objects;
  - every object whose `object` type has a fixture in Stripe's own fixtures (fixtures3.json)
    carries at least the fixture's fields, nested hashes included;
  - auto-paging ends on lists and searches, with every object once;
  - errors raise the client's documented class with Stripe's HTTP status, code and param;
  - every delivered webhook verifies with `stripe.Webhook.construct_event`, a tampered one not.

Usage: conformance.py EMULATOR_URL FIXTURES_JSON OUT_DIR
Writes OUT_DIR/deliveries.json (raw webhook bodies and signatures, for the Node part).
Exit status 0 when every check passed.
"""

import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

BASE, FIXTURES_PATH, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
SECRET = "whsec_conformance"
FIXTURES = json.load(open(FIXTURES_PATH))["resources"]
# Hashes whose keys are the caller's data, not Stripe's fields.
FREEFORM = {"metadata", "payload", "previous_attributes", "currency_options"}

passed = 0
failures = []


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL {what}", flush=True)


def fields_cover(obj, fixture, path):
    """Every key of the fixture hash is in obj; recurses into hashes both have."""
    missing = [k for k in fixture if k not in obj]
    for k in missing:
        failures.append(f"{path}.{k} missing (present in Stripe's fixture)")
        print(f"FAIL {path}.{k} missing (present in Stripe's fixture)", flush=True)
    for k, fv in fixture.items():
        ov = obj.get(k)
        if (
            k not in FREEFORM
            and isinstance(fv, dict)
            and isinstance(ov, dict)
            and "object" not in ov
            and "object" not in fv
        ):
            fields_cover(ov, fv, f"{path}.{k}")
    return not missing


seen_types = {}


def covers_fixtures(value, where):
    """Checks every Stripe object inside value (a dict from the API) against its fixture."""
    if isinstance(value, dict):
        kind = value.get("object")
        if isinstance(kind, str) and kind in FIXTURES:
            seen_types[kind] = seen_types.get(kind, 0) + 1
            check(fields_cover(value, FIXTURES[kind], f"{kind}"), f"{where}: {kind} fields")
        for v in value.values():
            covers_fixtures(v, where)
    elif isinstance(value, list):
        for v in value:
            covers_fixtures(v, where)


def call(what, fn, *args, **kwargs):
    """One API call: it must parse into a StripeObject; its objects are checked."""
    try:
        obj = fn(*args, **kwargs)
    except Exception as e:  # a parse failure or an unexpected error
        check(False, f"{what}: {type(e).__name__}: {e}")
        return None
    check(isinstance(obj, stripe.StripeObject), f"{what}: parses")
    covers_fixtures(obj.to_dict(), what)
    return obj


def expect_error(what, cls, status, code, param, fn, *args):
    try:
        fn(*args)
    except stripe.StripeError as e:
        check(isinstance(e, cls), f"{what}: raises {cls.__name__} (got {type(e).__name__})")
        check(e.http_status == status, f"{what}: status {status} (got {e.http_status})")
        # The client keeps the error body in e.error; some classes (RateLimitError) do not
        # copy its code onto the exception.
        got_code = e.code if e.code is not None else getattr(e.error, "code", None)
        check(got_code == code, f"{what}: code {code!r} (got {got_code!r})")
        got_param = getattr(e, "param", None) or getattr(e.error, "param", None)
        check(got_param == param, f"{what}: param {param!r} (got {got_param!r})")
        return
    check(False, f"{what}: no error raised")


def auto_pages(what, page, expected_ids, bound=500):
    """auto_paging_iter ends and yields every expected object exactly once."""
    got = []
    for obj in page.auto_paging_iter():
        got.append(obj.id)
        covers_fixtures(obj.to_dict(), what)
        if len(got) > bound:
            check(False, f"{what}: auto-paging did not end after {bound} objects")
            return
    check(len(got) == len(set(got)), f"{what}: auto-paging repeats no object")
    missing = set(expected_ids) - set(got)
    check(not missing, f"{what}: auto-paging yields all ({len(missing)} missing)")


def control(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        BASE + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


# --- webhook receiver ------------------------------------------------------------------------
deliveries = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        deliveries.append(
            {"body": body.decode(), "signature": self.headers.get("stripe-signature")}
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
control(
    "POST",
    "/_emulator/webhook_endpoint",
    {"url": f"http://127.0.0.1:{receiver.server_address[1]}/stripe/webhook", "secret": SECRET},
)

client = stripe.StripeClient(
    "sk_test_conformance", base_addresses={"api": BASE}, max_network_retries=0
)
v1 = client.v1
run = str(int(time.time() * 1000))

# --- customers and balance -------------------------------------------------------------------
customers = []
for i in range(5):
    c = call(
        "customers.create",
        v1.customers.create,
        {"email": f"py{i}-{run}@example.com", "name": f"Py {i}", "metadata": {"run": run}},
    )
    customers.append(c)
cus = customers[0]
call("customers.retrieve", v1.customers.retrieve, cus.id)
call("customers.update", v1.customers.update, cus.id, {"metadata": {"consumer_id": "c-1"}})
auto_pages(
    "customers.list",
    v1.customers.list({"limit": 2}),
    [c.id for c in customers],
)
auto_pages(
    "customers.search",
    v1.customers.search({"query": f"metadata['run']:'{run}'", "limit": 2}),
    [c.id for c in customers],
)
txn = call(
    "customers.balance_transactions.create",
    v1.customers.balance_transactions.create,
    cus.id,
    {"amount": -500, "currency": "usd", "description": "credit"},
)
call(
    "customers.balance_transactions.retrieve",
    v1.customers.balance_transactions.retrieve,
    cus.id,
    txn.id,
)
auto_pages(
    "customers.balance_transactions.list",
    v1.customers.balance_transactions.list(cus.id, {"limit": 1}),
    [txn.id],
)

# --- catalog: products (custom ids, as tollgate's catalog sync makes), meters, prices ---------
prod = call(
    "products.create",
    v1.products.create,
    {"id": f"tg_prod_py_{run}", "name": "Standard", "metadata": {"tollgate": "1"}},
)
call("products.retrieve", v1.products.retrieve, prod.id)
call("products.update", v1.products.update, prod.id, {"description": "The Standard plan"})
auto_pages("products.list", v1.products.list({"ids": [prod.id], "limit": 1}), [prod.id])
auto_pages(
    "products.search",
    v1.products.search({"query": "metadata['tollgate']:'1'", "limit": 1}),
    [prod.id],
)

meter = call(
    "billing.meters.create",
    v1.billing.meters.create,
    {
        "display_name": "API calls",
        "event_name": f"api_calls_py_{run}",
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    },
)
call("billing.meters.retrieve", v1.billing.meters.retrieve, meter.id)
call("billing.meters.update", v1.billing.meters.update, meter.id, {"display_name": "Calls"})
call("billing.meters.deactivate", v1.billing.meters.deactivate, meter.id)
call("billing.meters.reactivate", v1.billing.meters.reactivate, meter.id)
auto_pages("billing.meters.list", v1.billing.meters.list({"limit": 1}), [meter.id])

metered = call(
    "prices.create (graduated, metered)",
    v1.prices.create,
    {
        "currency": "usd",
        "product": prod.id,
        "billing_scheme": "tiered",
        "tiers_mode": "graduated",
        "tiers": [
            {"up_to": 100000, "flat_amount": 8995, "unit_amount": 0},
            {"up_to": "inf", "unit_amount_decimal": "0.1"},
        ],
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        "lookup_key": f"standard_py_{run}",
    },
)
seat = call(
    "prices.create (licensed, package)",
    v1.prices.create,
    {
        "currency": "usd",
        "product": prod.id,
        "unit_amount": 1000,
        "transform_quantity": {"divide_by": 5, "round": "up"},
        "recurring": {"interval": "month"},
        "lookup_key": f"seat_py_{run}",
    },
)
one_time = call(
    "prices.create (one-time)",
    v1.prices.create,
    {"currency": "usd", "product": prod.id, "unit_amount": 2500},
)
expanded = call(
    "prices.retrieve expand tiers, product",
    v1.prices.retrieve,
    metered.id,
    {"expand": ["tiers", "product"]},
)
if expanded is not None:
    check(len(expanded.tiers) == 2, "prices.retrieve: expand[]=tiers gives the tiers")
    check(
        isinstance(expanded.product, stripe.Product) and expanded.product.id == prod.id,
        "prices.retrieve: expand[]=product finds a custom-id product",
    )
call("prices.update", v1.prices.update, seat.id, {"nickname": "Seat"})
auto_pages(
    "prices.list lookup_keys expand data.tiers",
    v1.prices.list(
        {"lookup_keys": [metered.lookup_key, seat.lookup_key], "expand": ["data.tiers"], "limit": 1}
    ),
    [metered.id, seat.id],
)
auto_pages(
    "prices.search",
    v1.prices.search({"query": f"product:'{prod.id}'", "limit": 1}),
    [metered.id, seat.id, one_time.id],
)

# --- checkout, subscription, usage, invoices -------------------------------------------------
session = call(
    "checkout.sessions.create (subscription)",
    v1.checkout.sessions.create,
    {
        "mode": "subscription",
        "customer": cus.id,
        "client_reference_id": "sub-1",
        "line_items": [{"price": metered.id}, {"price": seat.id, "quantity": 7}],
        "metadata": {"tollgate_subscription": "sub-1"},
        "subscription_data": {"metadata": {"tollgate_subscription": "sub-1"}},
        "success_url": "https://portal.example/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://portal.example/cancel",
    },
    {"idempotency_key": f"tollgate:checkout:py-{run}"},
)
call("checkout.sessions.retrieve", v1.checkout.sessions.retrieve, session.id, {"expand": ["line_items"]})
auto_pages(
    "checkout.sessions.line_items.list",
    v1.checkout.sessions.line_items.list(session.id),
    [],
)
pay_session = call(
    "checkout.sessions.create (payment)",
    v1.checkout.sessions.create,
    {
        "mode": "payment",
        "customer": cus.id,
        "line_items": [
            {"price_data": {"currency": "usd", "product": prod.id, "unit_amount": 5000}, "quantity": 1}
        ],
        "metadata": {"tollgate_subscription": "sub-2"},
        "payment_intent_data": {"metadata": {"tollgate_subscription": "sub-2"}},
        "invoice_creation": {"enabled": True, "invoice_data": {"metadata": {"k": "v"}}},
        "success_url": "https://portal.example/ok",
    },
)
expire_me = call(
    "checkout.sessions.create (to expire)",
    v1.checkout.sessions.create,
    {"mode": "payment", "line_items": [{"price": one_time.id, "quantity": 1}], "success_url": "https://x.example/ok"},
)
call("checkout.sessions.expire", v1.checkout.sessions.expire, expire_me.id)
auto_pages(
    "checkout.sessions.list",
    v1.checkout.sessions.list({"customer": cus.id, "limit": 1}),
    [session.id, pay_session.id],
)

done = control("POST", f"/_emulator/checkout/{session.id}/complete", {"card": "good"})
control("POST", f"/_emulator/checkout/{pay_session.id}/complete", {"card": "good"})
sub_id = done["subscription"]
sub = call("subscriptions.retrieve", v1.subscriptions.retrieve, sub_id, {"expand": ["latest_invoice", "customer"]})
auto_pages("subscriptions.list", v1.subscriptions.list({"customer": cus.id, "limit": 1}), [sub_id])
items = call("subscription_items.list", v1.subscription_items.list, {"subscription": sub_id})
seat_item = [i for i in items.data if i.price.id == seat.id][0]
call("subscription_items.retrieve", v1.subscription_items.retrieve, seat_item.id)
call("subscription_items.update", v1.subscription_items.update, seat_item.id, {"quantity": 9})
call("subscriptions.update", v1.subscriptions.update, sub_id, {"metadata": {"plan": "standard"}})

for n, value in enumerate(["120000", "-20", "5"]):
    call(
        "billing.meter_events.create",
        v1.billing.meter_events.create,
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": cus.id, "value": value},
            "identifier": f"py-{run}-{n}",
        },
    )
now = control("GET", "/_emulator/state")["now"]
auto_pages(
    "billing.meters.event_summaries.list",
    v1.billing.meters.event_summaries.list(
        meter.id, {"customer": cus.id, "start_time": now - 3600, "end_time": now + 3600}
    ),
    [],
)

control("POST", "/_emulator/clock/advance", {"seconds": 32 * 86400})
invoices = v1.invoices.list({"subscription": sub_id, "limit": 1})
invoice_ids = [i.id for i in v1.invoices.list({"customer": cus.id, "limit": 100}).data]
check(len(invoice_ids) >= 2, "invoices: a first and a renewal invoice")
auto_pages("invoices.list", v1.invoices.list({"customer": cus.id, "limit": 1}), invoice_ids)
for inv_id in invoice_ids:
    inv = call("invoices.retrieve", v1.invoices.retrieve, inv_id)
    lines = []
    for line in v1.invoices.line_items.list(inv_id, {"limit": 1}).auto_paging_iter():
        lines.append(line)
        covers_fixtures(line.to_dict(), "invoices.line_items.list")
        if len(lines) > 100:
            check(False, "invoices.line_items.list: auto-paging did not end")
            break
    for line in lines:
        # Python raised AttributeError here when the field was missing.
        try:
            line.subscription
            check(True, "invoice line: .subscription")
        except AttributeError:
            check(False, f"invoice line {line.id}: no .subscription")
paid = [i for i in invoice_ids if v1.invoices.retrieve(i).status == "paid"]
if paid:
    expect_error(
        "invoices.pay on a paid invoice",
        stripe.InvalidRequestError,
        400,
        "invoice_not_editable",
        "invoice",
        v1.invoices.pay,
        paid[0],
    )

events = [e.id for e in v1.events.list({"limit": 100}).data]
auto_pages("events.list", v1.events.list({"limit": 10}), events[:100])
call("events.retrieve", v1.events.retrieve, events[0])
only = v1.events.list({"types": ["invoice.paid", "customer.created"], "limit": 100})
check(
    only.data and all(e.type in ("invoice.paid", "customer.created") for e in only.data),
    "events.list types[] filters",
)
call(
    "subscriptions.update cancel_at_period_end",
    v1.subscriptions.update,
    sub_id,
    {"cancel_at_period_end": True},
)
call("subscriptions.cancel", v1.subscriptions.cancel, sub_id, {"invoice_now": True})

# --- errors ---------------------------------------------------------------------------------
expect_error(
    "customers.retrieve unknown",
    stripe.InvalidRequestError, 404, "resource_missing", "id",
    v1.customers.retrieve, "cus_missing",
)
expect_error(
    "prices.create with a missing product",
    stripe.InvalidRequestError, 400, "resource_missing", "product",
    v1.prices.create, {"currency": "usd", "product": "prod_missing", "unit_amount": 1},
)
expect_error(
    "checkout.sessions.create with a missing price",
    stripe.InvalidRequestError, 400, "resource_missing", "line_items[0][price]",
    v1.checkout.sessions.create,
    {"mode": "payment", "line_items": [{"price": "price_missing", "quantity": 1}], "success_url": "https://x.example"},
)
expect_error(
    "customers.create with an unknown parameter",
    stripe.InvalidRequestError, 400, "parameter_unknown", "nmae",
    v1.customers.create, {"nmae": "x"},
)
expect_error(
    "customers.list with an unknown filter",
    stripe.InvalidRequestError, 400, "parameter_unknown", "created",
    v1.customers.list, {"created": {"gte": 1}},
)
expect_error(
    "customers.list starting_after an unknown id",
    stripe.InvalidRequestError, 400, "resource_missing", "starting_after",
    v1.customers.list, {"starting_after": "cus_missing"},
)
expect_error(
    "prices.retrieve with an unknown expand path",
    stripe.InvalidRequestError, 400, "parameter_invalid", "expand[0]",
    v1.prices.retrieve, metered.id, {"expand": ["nonsense"]},
)
expect_error(
    "billing.meter_events.create without event_name",
    stripe.InvalidRequestError, 400, "parameter_missing", "event_name",
    v1.billing.meter_events.create, {"payload": {"value": "1"}},
)
bad_key = stripe.StripeClient("garbage_key", base_addresses={"api": BASE}, max_network_retries=0)
expect_error(
    "a malformed API key",
    stripe.AuthenticationError, 401, None, None,
    bad_key.v1.customers.list,
)
key = f"idem-{run}"
v1.customers.create({"email": "a@example.com"}, {"idempotency_key": key})
expect_error(
    "an idempotency key reused with other parameters",
    stripe.IdempotencyError, 400, None, None,
    lambda: v1.customers.create({"email": "b@example.com"}, {"idempotency_key": key}),
)
expect_error(
    "an idempotency key over 255 characters",
    stripe.InvalidRequestError, 400, "parameter_invalid", "Idempotency-Key",
    lambda: v1.customers.create({"email": "c@example.com"}, {"idempotency_key": "k" * 256}),
)
declined = call("customers.create", v1.customers.create, {"email": f"declined-{run}@example.com"})
d_session = v1.checkout.sessions.create(
    {
        "mode": "subscription",
        "customer": declined.id,
        "line_items": [{"price": metered.id}],
        "success_url": "https://x.example/ok",
    }
)
control("POST", f"/_emulator/checkout/{d_session.id}/complete", {"card": "good"})
control("POST", f"/_emulator/customers/{declined.id}/card", {"card": "declined"})
v1.billing.meter_events.create(
    {"event_name": meter.event_name, "payload": {"stripe_customer_id": declined.id, "value": "200000"}}
)
control("POST", "/_emulator/clock/advance", {"seconds": 32 * 86400})
open_invoices = v1.invoices.list({"customer": declined.id, "status": "open"}).data
check(bool(open_invoices), "a declined card leaves an open invoice")
if open_invoices:
    expect_error(
        "invoices.pay with a declined card",
        stripe.CardError, 402, "card_declined", None,
        v1.invoices.pay, open_invoices[0].id,
    )
control(
    "POST", "/_emulator/faults", {"method": "GET", "path": "/v1/customers", "status": 429, "times": 1}
)
expect_error(
    "an injected 429",
    stripe.RateLimitError, 429, "rate_limit", None,
    v1.customers.list,
)

# --- webhooks --------------------------------------------------------------------------------
control("POST", "/_emulator/webhooks/wait_idle")
time.sleep(0.2)
check(len(deliveries) > 20, f"webhooks delivered ({len(deliveries)})")
for d in deliveries:
    try:
        event = stripe.Webhook.construct_event(d["body"], d["signature"], SECRET)
        check(isinstance(event, stripe.Event), "construct_event gives an Event")
        covers_fixtures(event.to_dict(), f"webhook {event.type}")
    except Exception as e:
        check(False, f"construct_event: {type(e).__name__}: {e}")
if deliveries:
    try:
        stripe.Webhook.construct_event(deliveries[0]["body"] + " ", deliveries[0]["signature"], SECRET)
        check(False, "a tampered webhook body verifies")
    except stripe.SignatureVerificationError:
        check(True, "a tampered webhook body is refused")
json.dump({"secret": SECRET, "deliveries": deliveries}, open(f"{OUT}/deliveries.json", "w"))

print(
    "python: object types checked against fixtures: "
    + ", ".join(f"{k}×{v}" for k, v in sorted(seen_types.items())),
    flush=True,
)
for f in failures:
    print(f"python FAIL: {f}")
print(f"python: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
