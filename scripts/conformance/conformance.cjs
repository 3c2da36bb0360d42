// Stripe's official Node client (stripe on npm, pinned in package-lock.json) against the
// emulator: the same checks as conformance.py — every call parses, every object carries the
// fields of Stripe's fixture for its type, auto-paging ends on lists and searches, errors are
// the client's documented classes with Stripe's status, code and param, and every webhook the
// Python part received verifies with `stripe.webhooks.constructEvent`.
//
// Usage: node conformance.cjs EMULATOR_URL FIXTURES_JSON OUT_DIR   (exit 0 when all passed)

'use strict';
const fs = require('fs');
const path = require('path');

const [BASE, FIXTURES_PATH, OUT] = process.argv.slice(2);
const Stripe = require(path.join(process.env.STRIPE_NODE_MODULES, 'stripe'));
const FIXTURES = JSON.parse(fs.readFileSync(FIXTURES_PATH, 'utf8')).resources;
const FREEFORM = new Set(['metadata', 'payload', 'previous_attributes', 'currency_options']);
const url = new URL(BASE);
const stripe = new Stripe('sk_test_conformance', {
  host: url.hostname,
  port: url.port,
  protocol: 'http',
  maxNetworkRetries: 0,
});

let passed = 0;
const failures = [];
const seen = {};

function check(ok, what) {
  if (ok) passed += 1;
  else {
    failures.push(what);
    console.log(`FAIL ${what}`);
  }
}

const isHash = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function fieldsCover(obj, fixture, where) {
  let ok = true;
  for (const [k, fv] of Object.entries(fixture)) {
    if (!(k in obj)) {
      ok = false;
      failures.push(`${where}.${k} missing (present in Stripe's fixture)`);
      console.log(`FAIL ${where}.${k} missing (present in Stripe's fixture)`);
      continue;
    }
    const ov = obj[k];
    if (!FREEFORM.has(k) && isHash(fv) && isHash(ov) && !('object' in ov) && !('object' in fv)) {
      ok = fieldsCover(ov, fv, `${where}.${k}`) && ok;
    }
  }
  return ok;
}

function coversFixtures(value, where) {
  if (Array.isArray(value)) value.forEach((v) => coversFixtures(v, where));
  else if (isHash(value)) {
    const kind = value.object;
    if (typeof kind === 'string' && FIXTURES[kind]) {
      seen[kind] = (seen[kind] || 0) + 1;
      check(fieldsCover(value, FIXTURES[kind], kind), `${where}: ${kind} fields`);
    }
    for (const v of Object.values(value)) {
      if (typeof v !== 'function') coversFixtures(v, where);
    }
  }
}

async function call(what, promise) {
  try {
    const obj = await promise;
    check(isHash(obj) && typeof obj.object === 'string', `${what}: parses`);
    coversFixtures(JSON.parse(JSON.stringify(obj)), what);
    return obj;
  } catch (e) {
    check(false, `${what}: ${e.type || e.name}: ${e.message}`);
    return null;
  }
}

async function autoPages(what, list, expectedIds) {
  try {
    const all = await list.autoPagingToArray({ limit: 500 });
    const ids = all.map((o) => o.id);
    check(all.length < 500, `${what}: auto-paging ends`);
    check(new Set(ids).size === ids.length, `${what}: auto-paging repeats no object`);
    const missing = expectedIds.filter((id) => !ids.includes(id));
    check(missing.length === 0, `${what}: auto-paging yields all (${missing.length} missing)`);
    all.forEach((o) => coversFixtures(JSON.parse(JSON.stringify(o)), what));
  } catch (e) {
    check(false, `${what}: auto-paging threw ${e.message}`);
  }
}

async function expectError(what, cls, status, code, param, promiseFn) {
  try {
    await promiseFn();
    check(false, `${what}: no error raised`);
  } catch (e) {
    check(e instanceof cls, `${what}: ${cls.name} (got ${e.constructor.name})`);
    check(e.statusCode === status, `${what}: status ${status} (got ${e.statusCode})`);
    check((e.code ?? null) === code, `${what}: code ${code} (got ${e.code})`);
    check((e.param ?? null) === param, `${what}: param ${param} (got ${e.param})`);
  }
}

async function control(method, p, body) {
  const r = await fetch(BASE + p, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return r.json();
}

async function main() {
  const run = String(Date.now());
  const customers = [];
  for (let i = 0; i < 4; i++) {
    customers.push(
      await call(
        'customers.create',
        stripe.customers.create({ email: `js${i}-${run}@example.com`, metadata: { run } }),
      ),
    );
  }
  const cus = customers[0];
  await call('customers.retrieve', stripe.customers.retrieve(cus.id));
  await call('customers.update', stripe.customers.update(cus.id, { name: 'JS' }));
  await autoPages('customers.list', stripe.customers.list({ limit: 2 }), customers.map((c) => c.id));
  await autoPages(
    'customers.search',
    stripe.customers.search({ query: `metadata['run']:'${run}'`, limit: 2 }),
    customers.map((c) => c.id),
  );
  const txn = await call(
    'customers.createBalanceTransaction',
    stripe.customers.createBalanceTransaction(cus.id, { amount: -300, currency: 'usd' }),
  );
  await call(
    'customers.retrieveBalanceTransaction',
    stripe.customers.retrieveBalanceTransaction(cus.id, txn.id),
  );
  await autoPages(
    'customers.listBalanceTransactions',
    stripe.customers.listBalanceTransactions(cus.id, { limit: 1 }),
    [txn.id],
  );

  const prod = await call(
    'products.create',
    stripe.products.create({ id: `tg_prod_js_${run}`, name: 'Payg', metadata: { js: run } }),
  );
  await call('products.retrieve', stripe.products.retrieve(prod.id));
  await call('products.update', stripe.products.update(prod.id, { description: 'Pay as you go' }));
  await autoPages('products.list', stripe.products.list({ ids: [prod.id] }), [prod.id]);
  await autoPages(
    'products.search',
    stripe.products.search({ query: `metadata['js']:'${run}'` }),
    [prod.id],
  );
  const meter = await call(
    'billing.meters.create',
    stripe.billing.meters.create({
      display_name: 'Calls',
      event_name: `api_calls_js_${run}`,
      default_aggregation: { formula: 'sum' },
    }),
  );
  await call('billing.meters.retrieve', stripe.billing.meters.retrieve(meter.id));
  await call('billing.meters.update', stripe.billing.meters.update(meter.id, { display_name: 'API' }));
  await call('billing.meters.deactivate', stripe.billing.meters.deactivate(meter.id));
  await call('billing.meters.reactivate', stripe.billing.meters.reactivate(meter.id));
  await autoPages('billing.meters.list', stripe.billing.meters.list({ limit: 1 }), [meter.id]);
  const price = await call(
    'prices.create',
    stripe.prices.create({
      currency: 'usd',
      product: prod.id,
      unit_amount_decimal: '0.15',
      recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
      lookup_key: `payg_js_${run}`,
    }),
  );
  const retrieved = await call(
    'prices.retrieve expand product',
    stripe.prices.retrieve(price.id, { expand: ['product'] }),
  );
  check(retrieved && retrieved.product && retrieved.product.id === prod.id, 'expand[]=product on a custom id');
  await call('prices.update', stripe.prices.update(price.id, { metadata: { k: 'v' } }));
  await autoPages(
    'prices.list lookup_keys',
    stripe.prices.list({ lookup_keys: [price.lookup_key], expand: ['data.tiers'] }),
    [price.id],
  );
  await autoPages('prices.search', stripe.prices.search({ query: `product:'${prod.id}'` }), [price.id]);

  const session = await call(
    'checkout.sessions.create',
    stripe.checkout.sessions.create(
      {
        mode: 'subscription',
        customer: cus.id,
        line_items: [{ price: price.id }],
        subscription_data: { metadata: { tollgate_subscription: 's-js' } },
        success_url: 'https://portal.example/ok',
      },
      { idempotencyKey: `tollgate:checkout:js-${run}` },
    ),
  );
  await call('checkout.sessions.retrieve', stripe.checkout.sessions.retrieve(session.id));
  await autoPages('checkout.sessions.listLineItems', stripe.checkout.sessions.listLineItems(session.id), []);
  await autoPages('checkout.sessions.list', stripe.checkout.sessions.list({ customer: cus.id }), [session.id]);
  const done = await control('POST', `/_emulator/checkout/${session.id}/complete`, { card: 'good' });
  const subId = done.subscription;
  await call('subscriptions.retrieve', stripe.subscriptions.retrieve(subId, { expand: ['customer'] }));
  await autoPages('subscriptions.list', stripe.subscriptions.list({ customer: cus.id }), [subId]);
  const items = await call('subscriptionItems.list', stripe.subscriptionItems.list({ subscription: subId }));
  await call('subscriptionItems.retrieve', stripe.subscriptionItems.retrieve(items.data[0].id));
  await call(
    'billing.meterEvents.create',
    stripe.billing.meterEvents.create({
      event_name: meter.event_name,
      payload: { stripe_customer_id: cus.id, value: '1000' },
    }),
  );
  const state = await control('GET', '/_emulator/state');
  await autoPages(
    'billing.meters.listEventSummaries',
    stripe.billing.meters.listEventSummaries(meter.id, {
      customer: cus.id,
      start_time: state.now - 3600,
      end_time: state.now + 3600,
    }),
    [],
  );
  await control('POST', '/_emulator/clock/advance', { seconds: 32 * 86400 });
  const invoices = await stripe.invoices.list({ subscription: subId, limit: 100 });
  check(invoices.data.length >= 1, 'invoices for the subscription');
  await autoPages('invoices.list', stripe.invoices.list({ customer: cus.id, limit: 1 }), invoices.data.map((i) => i.id));
  for (const inv of invoices.data) {
    await call('invoices.retrieve', stripe.invoices.retrieve(inv.id));
    const lines = await stripe.invoices.listLineItems(inv.id, { limit: 1 }).autoPagingToArray({ limit: 100 });
    for (const l of lines) check(l.subscription === subId, 'invoice line: subscription');
  }
  await call('subscriptions.update', stripe.subscriptions.update(subId, { cancel_at_period_end: true }));
  await call('subscriptions.cancel', stripe.subscriptions.cancel(subId));
  const evs = await stripe.events.list({ limit: 100 });
  await autoPages('events.list', stripe.events.list({ limit: 10 }), evs.data.map((e) => e.id));
  await call('events.retrieve', stripe.events.retrieve(evs.data[0].id));

  const E = Stripe.errors;
  await expectError('customers.retrieve unknown', E.StripeInvalidRequestError, 404, 'resource_missing', 'id', () =>
    stripe.customers.retrieve('cus_missing'),
  );
  await expectError(
    'prices.create with a missing product',
    E.StripeInvalidRequestError,
    400,
    'resource_missing',
    'product',
    () => stripe.prices.create({ currency: 'usd', product: 'prod_missing', unit_amount: 1 }),
  );
  await expectError('unknown parameter', E.StripeInvalidRequestError, 400, 'parameter_unknown', 'nmae', () =>
    stripe.customers.create({ nmae: 'x' }),
  );
  await expectError('unknown list filter', E.StripeInvalidRequestError, 400, 'parameter_unknown', 'created', () =>
    stripe.customers.list({ created: { gte: 1 } }),
  );
  await expectError(
    'starting_after an unknown id',
    E.StripeInvalidRequestError,
    400,
    'resource_missing',
    'starting_after',
    () => stripe.customers.list({ starting_after: 'cus_missing' }),
  );
  await expectError('unknown expand path', E.StripeInvalidRequestError, 400, 'parameter_invalid', 'expand[0]', () =>
    stripe.prices.retrieve(price.id, { expand: ['nonsense'] }),
  );
  const bad = new Stripe('garbage_key', { host: url.hostname, port: url.port, protocol: 'http', maxNetworkRetries: 0 });
  await expectError('a malformed API key', E.StripeAuthenticationError, 401, null, null, () => bad.customers.list());
  const key = `idem-js-${run}`;
  await stripe.customers.create({ email: 'a@example.com' }, { idempotencyKey: key });
  await expectError('idempotency key reused', E.StripeIdempotencyError, 400, null, null, () =>
    stripe.customers.create({ email: 'b@example.com' }, { idempotencyKey: key }),
  );

  const { secret, deliveries } = JSON.parse(fs.readFileSync(`${OUT}/deliveries.json`, 'utf8'));
  check(deliveries.length > 0, 'webhook deliveries from the Python part');
  for (const d of deliveries) {
    try {
      const ev = stripe.webhooks.constructEvent(d.body, d.signature, secret);
      check(ev.object === 'event', 'constructEvent gives an event');
      coversFixtures(ev, `webhook ${ev.type}`);
    } catch (e) {
      check(false, `constructEvent: ${e.message}`);
    }
  }
  try {
    stripe.webhooks.constructEvent(deliveries[0].body + ' ', deliveries[0].signature, secret);
    check(false, 'a tampered webhook verifies');
  } catch (e) {
    check(e instanceof E.StripeSignatureVerificationError, 'a tampered webhook is refused');
  }

  console.log(
    'node: object types checked against fixtures: ' +
      Object.entries(seen)
        .sort()
        .map(([k, v]) => `${k}×${v}`)
        .join(', '),
  );
  for (const f of failures) console.log(`node FAIL: ${f}`);
  console.log(`node: ${passed} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log(`node FAIL: ${e.stack}`);
  process.exit(1);
});
