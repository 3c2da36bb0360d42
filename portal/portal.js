// The sample developer portal: catalog, subscribe (through Stripe Checkout), keys, usage and
// the bill so far. Plain DOM, no framework. Every call goes to /portal/api/..., the local
// stack's same-origin proxy that adds the portal secret (the page never holds it).
"use strict";

const API = "/portal/api";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function money(minor, currency) {
  return new Intl.NumberFormat("en-US", { style: "currency", currency: (currency || "usd").toUpperCase() })
    .format(minor / 100);
}

function say(text, isError) {
  const m = $("#message");
  m.hidden = !text;
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const resp = await fetch(API + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = data.error || {};
    throw new Error(`${resp.status}: ${e.message || data.message || "request failed"}${e.field ? ` (${e.field})` : ""}`);
  }
  return data;
}

// Keys are shown once by tollgate (only their hash is stored). This local page keeps the ones
// it was shown in localStorage so the demo can display them; a real portal shows them once.
const keys = {
  get: (sub) => localStorage.getItem(`tollgate.key.${sub}`),
  set: (sub, key) => localStorage.setItem(`tollgate.key.${sub}`, key),
};

function consumer() {
  return localStorage.getItem("tollgate.consumer") || "";
}

let catalog = null;

function productName(id) {
  const p = catalog && catalog.products.find((p) => p.id === id);
  return p ? p.name : id;
}

function renderCatalog() {
  const rows = catalog.products.map((p) => {
    let action;
    if (p.credit) {
      action = el("span", {}, ...(p.credit.packs || []).map((amount) =>
        el("button", { class: "secondary", "data-credit": p.id, "data-amount": amount,
          onclick: () => subscribe(p, amount) }, `Buy ${money(amount, catalog.currency)}`)));
    } else {
      action = el("button", { "data-subscribe": p.id, onclick: () => subscribe(p) }, "Subscribe");
    }
    const limits = [];
    if (p.quota) limits.push(`${p.quota.limit.toLocaleString("en-US")} ${p.quota.meter} / ${p.interval || "period"}`);
    if (p.rate_limit_per_minute) limits.push(`${p.rate_limit_per_minute} / min`);
    return el("tr", { "data-product": p.id },
      el("td", {}, el("strong", {}, p.name)),
      el("td", {}, p.description || ""),
      el("td", {}, limits.join(", ")),
      el("td", {}, action));
  });
  $("#catalog").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Product"), el("th", {}, "Price"), el("th", {}, "Limits"), el("th", {}, ""))),
    el("tbody", {}, rows)));
}

async function subscribe(product, creditAmount) {
  const who = consumer();
  if (!who) { say("Sign in with a consumer id first.", true); return; }
  const back = `${location.origin}/portal/`;
  try {
    say(`Starting checkout for ${product.name}…`);
    const body = {
      consumer_id: who,
      product_id: product.id,
      subscription_name: product.name,
      success_url: `${back}?checkout=success&session={CHECKOUT_SESSION_ID}`,
      cancel_url: `${back}?checkout=cancel`,
    };
    if (creditAmount) body.credit_amount = creditAmount;
    const answer = await api("POST", "/checkout/sessions", body);
    if (answer.subscription_id && answer.api_key) keys.set(answer.subscription_id, answer.api_key);
    // Stripe's hosted page (the emulator's, locally); it sends the browser back to success_url.
    location.assign(answer.url);
  } catch (e) {
    say(`Checkout failed: ${e.message}`, true);
  }
}

async function newKey(sub) {
  try {
    const k = await api("POST", `/subscriptions/${encodeURIComponent(sub)}/keys`);
    keys.set(sub, k.api_key);
    say(`New key issued for ${sub}; the old one no longer works.`);
    await loadSubscriptions();
  } catch (e) { say(`Key not issued: ${e.message}`, true); }
}

async function cancel(sub) {
  try {
    await api("POST", `/subscriptions/${encodeURIComponent(sub)}/cancel`);
    say(`Subscription ${sub} cancelled.`);
    await loadSubscriptions();
  } catch (e) { say(`Not cancelled: ${e.message}`, true); }
}

function usageText(s) {
  const parts = Object.entries(s.usage || {}).map(([m, n]) => `${n.toLocaleString("en-US")} ${m}`);
  if (s.quota) parts.push(`quota ${s.quota.used.toLocaleString("en-US")} / ${s.quota.limit.toLocaleString("en-US")}${s.quota.exceeded ? " (exceeded)" : ""}`);
  return parts.join(", ") || "—";
}

function keyCell(s) {
  const live = (s.keys || []).filter((k) => !k.revoked_at);
  const full = keys.get(s.id);
  const shown = full && live.some((k) => full.startsWith(k.prefix.replace(/…$/, "")))
    ? full : live.map((k) => k.prefix).join(", ");
  return el("td", { class: "api-key" }, shown || "—");
}

async function loadSubscriptions() {
  const who = consumer();
  if (!who) return [];
  const data = await api("GET", `/consumers/${encodeURIComponent(who)}/subscriptions`);
  const subs = data.subscriptions || [];
  if (!subs.length) {
    $("#subscriptions").replaceChildren(el("p", { class: "muted" }, `${who} has no subscriptions yet: pick a product below.`));
    return subs;
  }
  const rows = subs.map((s) => el("tr", { "data-subscription": s.id, "data-status": s.status, "data-product": s.product_id },
    el("td", {}, el("strong", {}, s.name), el("br"), el("span", { class: "muted" }, productName(s.product_id))),
    el("td", {}, el("span", { class: `status ${s.status}` }, s.status),
      s.cancel_at_period_end ? el("div", { class: "muted" }, "ends at period end") : null),
    keyCell(s),
    el("td", {}, usageText(s)),
    el("td", { class: "money bill" }, s.quote ? money(s.quote.total, s.quote.currency) : "—"),
    el("td", { class: "muted" }, `${s.period_start.slice(0, 10)} → ${s.period_end.slice(0, 10)}`),
    el("td", {},
      el("button", { class: "secondary", onclick: () => newKey(s.id), disabled: s.status === "canceled" ? "" : null }, "New key"), " ",
      el("button", { class: "secondary", onclick: () => cancel(s.id) }, "Cancel"))));
  $("#subscriptions").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Subscription"), el("th", {}, "Status"), el("th", {}, "API key"),
      el("th", {}, "Usage this period"), el("th", {}, "Bill so far"), el("th", {}, "Period"), el("th", {}, ""))),
    el("tbody", {}, rows)));
  return subs;
}

// Back from Checkout: Stripe's webhook activates the subscription a moment later.
async function waitForActivation() {
  for (let i = 0; i < 40; i++) {
    const subs = await loadSubscriptions();
    if (!subs.some((s) => s.status === "pending")) { say("Payment received: your subscription is active."); return; }
    say("Payment received; waiting for Stripe's confirmation…");
    await new Promise((r) => setTimeout(r, 500));
  }
  say("Still waiting for Stripe's confirmation; reload the page in a moment.", true);
}

async function main() {
  $("#consumer").value = consumer();
  $("#signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    localStorage.setItem("tollgate.consumer", $("#consumer").value.trim());
    say("");
    await loadSubscriptions().catch((e) => say(e.message, true));
  });
  try {
    catalog = await api("GET", "/catalog");
    renderCatalog();
  } catch (e) { say(`Catalog not loaded: ${e.message}`, true); }
  const params = new URLSearchParams(location.search);
  if (params.get("checkout") === "success") {
    history.replaceState(null, "", location.pathname);
    await waitForActivation();
  } else {
    if (params.get("checkout") === "cancel") say("Checkout cancelled: nothing was charged.");
    await loadSubscriptions().catch((e) => say(e.message, true));
  }
  document.body.dataset.ready = "true";
}

main();
