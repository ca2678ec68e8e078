// The live dashboard: one tenant's KPIs pushed by the websocket gateway (DESIGN section 8), and
// three reports fetched from the HTTP API after each push (AR aging, deferred revenue waterfall,
// MRR movements).
//
// Flow: token (URL ?token= or #token=, else the form; kept in sessionStorage) -> tenant (the
// token's claim; a "*" token lets the user type one) -> GET /v1/dashboard/config for the gateway's
// URL -> WebSocket(url?token=...) -> subscribe -> snapshot, then kpi:update frames. Every frame
// carries the whole state, so a jump in seq (coalesced updates) needs nothing special. A dropped
// connection is retried with backoff and resubscribes with "since" and "position"; close code
// 4401 (token missing, bad or expired) stops and asks for a new token instead.
//
// Figures are shown exactly as the ledger sends them (decimal strings, digits grouped); each has a
// stable id and data-kpi / data-value attributes.

import { bridgeColumns, drawColumns } from "./charts.js";
import {
  addDecimals,
  formatCount,
  formatDays,
  formatMoney,
  formatPercent,
  formatRatio,
  isZero,
  negateDecimal,
} from "./format.js";

const tokenStorageKey = "ledger.dashboard.token";
const tenantStorageKey = "ledger.dashboard.tenant";
const unauthorizedCloseCode = 4401;
// Reconnect backoff: doubles from the minimum up to the maximum, +-20 % jitter so that many pages
// dropped together do not come back in step.
const reconnectDelayMinMs = 500;
const reconnectDelayMaxMs = 15000;
// Failed connection attempts (never opened) before the page says the gateway cannot be reached.
const unreachableAttemptsMin = 3;
// The reports are heavier than a push: at most one round in flight and one started per interval;
// the last round always uses the newest as_of.
const reportsIntervalMinMs = 2000;
// A round that failed for a reason that may pass (HTTP 5xx, network) is tried again after this,
// unless a newer update has started a round meanwhile.
const reportsRetryDelayMs = 5000;
const configRetryDelayMaxMs = 10000;
const agingInvoicesLimit = 20;
const waterfallMonthsShown = 24;
const mrrCustomersShown = 12;
// The gateway's own tolerance for clock skew on a token's expiry (ledger.auth.leeway_s).
const tokenLeewayMs = 30000;

const kpiGroups = [
  [
    "Revenue and profit",
    [
      ["revenue_mtd", "Revenue, month to date", "money"],
      ["revenue_ytd", "Revenue, year to date", "money"],
      ["billings_mtd", "Billings, month to date", "money"],
      ["expenses_mtd", "Expenses, month to date", "money"],
      ["net_income_mtd", "Net income, month to date", "money"],
      ["margin_mtd", "Margin, month to date", "percent"],
    ],
  ],
  [
    "Cash, receivables and payables",
    [
      ["cash", "Cash", "money"],
      ["ar", "Accounts receivable", "money"],
      ["ar_overdue", "Overdue receivables", "money"],
      ["ar_over_90_share", "Share over 90 days past due", "percent"],
      ["unapplied", "Unapplied cash", "money"],
      ["ap", "Accounts payable", "money"],
      ["dso", "DSO", "days"],
      ["dpo", "DPO", "days"],
      ["current_ratio", "Current ratio", "ratio"],
    ],
  ],
  [
    "Recurring revenue and contracts",
    [
      ["mrr", "MRR", "money"],
      ["arr", "ARR", "money"],
      ["nrr", "Net revenue retention", "percent"],
      ["grr", "Gross revenue retention", "percent"],
      ["deferred_revenue", "Deferred revenue", "money"],
      ["unbilled_revenue", "Unbilled revenue", "money"],
      ["customers", "Customers", "count"],
      ["active_contracts", "Active contracts", "count"],
    ],
  ],
];

const connectionLabels = {
  "signed-out": "signed out",
  connecting: "connecting…",
  subscribing: "subscribing…",
  live: "live",
  reconnecting: "reconnecting…",
  unauthorized: "token refused",
  "no-gateway": "no gateway",
};

const state = {
  token: null,
  tenant: null,
  gatewayUrl: null,
  socket: null,
  // Bumped whenever the page signs in again or stops: callbacks of an older generation do nothing.
  generation: 0,
  lastSeq: null,
  frame: null,
  receivedAt: null,
  reconnectAttempts: 0,
  timers: new Set(),
  reports: null,
};

const byId = (id) => document.getElementById(id);

function later(callback, delayMs) {
  const timer = setTimeout(() => {
    state.timers.delete(timer);
    callback();
  }, delayMs);
  state.timers.add(timer);
}

// --- token and tenant ---------------------------------------------------------------------------

// The payload of a JWT (base64url JSON), or null when the text is not one. Not verified here:
// the gateway and the API check the signature; the page only needs to know the tenant.
function tokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    const bytes = Uint8Array.from(atob(base64), (character) => character.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

// ?token= / #token= (and ?tenant= for a "*" token), then out of the address bar, so the token is
// not left in the history or shown over someone's shoulder.
function takeFromUrl() {
  const url = new URL(location.href);
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ""));
  const token = url.searchParams.get("token") || fragment.get("token");
  const tenant = url.searchParams.get("tenant") || fragment.get("tenant");
  if (url.searchParams.has("token") || fragment.has("token")) {
    url.searchParams.delete("token");
    fragment.delete("token");
    const rest = fragment.toString();
    url.hash = rest ? `#${rest}` : "";
    history.replaceState(null, "", url.toString());
  }
  return { token: token?.trim() || null, tenant: tenant?.trim() || null };
}

function signIn(token, typedTenant) {
  const claims = tokenClaims(token);
  if (!claims) {
    return showSignIn("That is not a ledger token (a JWT with the claim tenant).", token);
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 + tokenLeewayMs < Date.now()) {
    return showSignIn("That token has expired: ask for a new one (ledger token --tenant T).");
  }
  if (typeof claims.tenant !== "string" || !claims.tenant) {
    return showSignIn("That token names no tenant.", token);
  }
  let tenant = claims.tenant;
  if (tenant === "*") {
    if (!typedTenant) {
      return showSignIn("This token may read every tenant: type the tenant to show.", token);
    }
    tenant = typedTenant;
    sessionStorage.setItem(tenantStorageKey, tenant);
  }
  sessionStorage.setItem(tokenStorageKey, token);
  state.token = token;
  state.tenant = tenant;
  start();
}

function showSignIn(message, token = "") {
  stop();
  setConnection("signed-out");
  byId("sign-in").hidden = false;
  byId("dashboard").hidden = true;
  byId("sign-in-message").textContent = message;
  byId("sign-in-message").hidden = !message;
  byId("token-input").value = token;
  byId("tenant-input").value = sessionStorage.getItem(tenantStorageKey) || "";
  byId(token ? "tenant-input" : "token-input").focus();
}

function signOut() {
  sessionStorage.removeItem(tokenStorageKey);
  sessionStorage.removeItem(tenantStorageKey);
  state.tenant = null;
  showSignIn("");
}

// --- connection ---------------------------------------------------------------------------------

function stop() {
  state.generation += 1;
  for (const timer of state.timers) clearTimeout(timer);
  state.timers.clear();
  if (state.socket) {
    state.socket.close(1000, "dashboard stopped");
    state.socket = null;
  }
  state.reports = {
    inFlight: false,
    pendingAsOf: null,
    lastStartMs: -Infinity,
    waiting: false,
    rounds: 0,
  };
}

function setConnection(name, detail = "") {
  state.connection = name;
  const element = byId("connection");
  element.dataset.state = name;
  element.textContent = connectionLabels[name] + (detail ? ` ${detail}` : "");
}

async function start() {
  stop();
  state.lastSeq = null;
  state.frame = null;
  state.receivedAt = null;
  state.reconnectAttempts = 0;
  clearDashboard();
  byId("sign-in").hidden = true;
  byId("dashboard").hidden = false;
  byId("tenant").textContent = state.tenant;
  byId("tenant").dataset.tenant = state.tenant;
  document.title = `${state.tenant} · ledger dashboard`;
  setConnection("connecting");
  const generation = state.generation;
  const gatewayUrl = await loadGatewayUrl(generation, 0);
  if (gatewayUrl === null || generation !== state.generation) return;
  state.gatewayUrl = gatewayUrl;
  connect();
}

async function loadGatewayUrl(generation, attempt) {
  let problem;
  try {
    const response = await fetch("/v1/dashboard/config", { cache: "no-store" });
    const body = await response.json().catch(() => null);
    if (generation !== state.generation) return null;
    if (response.ok && typeof body?.gateway_url === "string") {
      const url = new URL(body.gateway_url, location.href);
      // A gateway bound to every interface is reached on the host this page came from.
      if (["0.0.0.0", "[::]"].includes(url.hostname)) url.hostname = location.hostname;
      return url.toString();
    }
    if (response.status === 404) {
      setConnection("no-gateway");
      showBanner("config", `No live updates: ${describeError(response.status, body)}`);
      return null;
    }
    problem = describeError(response.status, body);
  } catch (error) {
    problem = error.message;
  }
  if (generation !== state.generation) return null;
  const delayMs = Math.min(configRetryDelayMaxMs, reconnectDelayMinMs * 2 ** attempt);
  showBanner("config", `Cannot read the dashboard's configuration (${problem}); retrying.`);
  await new Promise((resolve) => later(resolve, delayMs));
  if (generation !== state.generation) return null;
  return loadGatewayUrl(generation, attempt + 1);
}

function connect() {
  const generation = state.generation;
  const separator = state.gatewayUrl.includes("?") ? "&" : "?";
  // Browsers cannot set headers on a websocket: the token travels in the query.
  const url = `${state.gatewayUrl}${separator}token=${encodeURIComponent(state.token)}`;
  setConnection(state.lastSeq === null ? "connecting" : "reconnecting");
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (error) {
    setConnection("no-gateway");
    showBanner("connection", `The gateway URL ${state.gatewayUrl} is not usable: ${error.message}`);
    return;
  }
  state.socket = socket;
  let opened = false;
  socket.addEventListener("open", () => {
    if (generation !== state.generation) return;
    opened = true;
    const subscribe = { type: "subscribe", channel: "kpi:update", tenant: state.tenant };
    if (state.lastSeq !== null) {
      subscribe.since = state.lastSeq;
      // With the position too: after a Redis reset the same seq can name another state.
      if (typeof state.frame?.position === "number") subscribe.position = state.frame.position;
    }
    socket.send(JSON.stringify(subscribe));
    setConnection("subscribing");
  });
  socket.addEventListener("message", (event) => {
    if (generation === state.generation) receive(event.data);
  });
  socket.addEventListener("close", (event) => {
    if (generation !== state.generation) return;
    state.socket = null;
    if (event.code === unauthorizedCloseCode) {
      refused(event.reason);
    } else {
      reconnectLater(opened, event);
    }
  });
}

function reconnectLater(opened, event) {
  state.reconnectAttempts += 1;
  const exponent = Math.min(state.reconnectAttempts - 1, 16);
  const baseMs = Math.min(reconnectDelayMaxMs, reconnectDelayMinMs * 2 ** exponent);
  const delayMs = Math.round(baseMs * (0.8 + 0.4 * Math.random()));
  setConnection("reconnecting", `in ${(delayMs / 1000).toFixed(1)} s`);
  if (!opened && state.reconnectAttempts >= unreachableAttemptsMin) {
    showBanner("connection", `Cannot reach the gateway at ${state.gatewayUrl}; retrying.`);
  } else if (opened) {
    const reason = event.reason ? `: ${event.reason}` : "";
    showBanner("connection", `The connection closed (code ${event.code}${reason}); retrying.`);
  }
  later(connect, delayMs);
}

function refused(reason) {
  sessionStorage.removeItem(tokenStorageKey);
  stop();
  setConnection("unauthorized");
  const why = reason ? ` (${reason})` : "";
  showSignIn(
    `The gateway refused the token${why}: it is missing, not valid or expired. ` +
      "Paste a new one (ledger token --tenant T).",
  );
  setConnection("unauthorized");
}

function receive(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    console.warn("ledger dashboard: a frame that is not JSON", text);
    return;
  }
  if (frame.type === "error") {
    showBanner("gateway", `The gateway says ${frame.code}: ${frame.message}`);
    return;
  }
  if (frame.type !== "snapshot" && frame.type !== "kpi:update") return;
  // The gateway sends only the subscribed tenant; the page checks again all the same.
  if (frame.channel !== "kpi:update" || frame.tenant !== state.tenant) {
    console.warn("ledger dashboard: ignored a frame for", frame.channel, frame.tenant);
    return;
  }
  const stale =
    frame.type === "kpi:update" &&
    state.lastSeq !== null &&
    typeof frame.seq === "number" &&
    frame.seq <= state.lastSeq;
  if (stale) return;
  state.lastSeq = typeof frame.seq === "number" ? frame.seq : state.lastSeq;
  state.frame = frame;
  state.receivedAt = Date.now();
  state.reconnectAttempts = 0;
  hideBanner("connection");
  hideBanner("gateway");
  setConnection("live");
  renderKpis(frame);
  renderAlerts(frame.alerts || []);
  renderFreshness();
  if (frame.as_of) requestReports(frame.as_of);
}

// --- KPIs and freshness -------------------------------------------------------------------------

function buildKpis() {
  const container = byId("kpis");
  for (const [title, definitions] of kpiGroups) {
    const section = document.createElement("section");
    section.className = "kpi-group";
    const heading = document.createElement("h2");
    heading.textContent = title;
    const list = document.createElement("dl");
    for (const [key, label, kind] of definitions) {
      const card = document.createElement("div");
      card.className = "kpi";
      card.dataset.kpiCard = key;
      const name = document.createElement("dt");
      name.textContent = label;
      const value = document.createElement("dd");
      value.id = `kpi-${key}`;
      value.dataset.kpi = key;
      value.dataset.format = kind;
      value.dataset.value = "";
      value.textContent = "…";
      card.append(name, value);
      list.append(card);
    }
    section.append(heading, list);
    container.append(section);
  }
}

function formatKpi(kind, value, currency) {
  if (value === null || value === undefined) return "—";
  switch (kind) {
    case "money":
      return formatMoney(value, currency);
    case "percent":
      return formatPercent(value);
    case "days":
      return formatDays(value);
    case "ratio":
      return formatRatio(value);
    default:
      return formatCount(value);
  }
}

function renderKpis(frame) {
  const kpis = frame.kpis || {};
  for (const element of document.querySelectorAll("[data-kpi]")) {
    const raw = kpis[element.dataset.kpi];
    const value = raw === null || raw === undefined ? "" : String(raw);
    const changed = element.dataset.value !== value && element.dataset.shown === "true";
    element.dataset.value = value;
    element.dataset.shown = "true";
    element.textContent = formatKpi(element.dataset.format, raw, frame.currency);
    if (changed) {
      const card = element.parentElement;
      card.classList.remove("changed");
      void card.offsetWidth; // restart the highlight
      card.classList.add("changed");
    }
  }
  byId("currency").textContent = frame.currency || "no currency yet";
}

function renderAlerts(alerts) {
  const list = byId("alerts");
  list.replaceChildren(
    ...alerts.map((alert) => {
      const item = document.createElement("li");
      item.dataset.code = alert.code;
      item.textContent = alert.message;
      return item;
    }),
  );
  list.hidden = alerts.length === 0;
}

function renderFreshness() {
  const frame = state.frame;
  const freshness = byId("freshness");
  if (!frame) {
    for (const id of ["position", "seq", "as-of", "updated-at"]) byId(id).textContent = "—";
    byId("received-ago").textContent = "";
    for (const key of ["position", "seq", "asOf", "updatedAt"]) delete freshness.dataset[key];
    return;
  }
  freshness.dataset.position = String(frame.position ?? "");
  freshness.dataset.seq = String(frame.seq ?? "");
  freshness.dataset.asOf = String(frame.as_of ?? "");
  freshness.dataset.updatedAt = String(frame.updated_at ?? "");
  byId("position").textContent = formatCount(frame.position);
  byId("seq").textContent = formatCount(frame.seq);
  byId("as-of").textContent = frame.as_of ?? "—";
  const updated = frame.updated_at ? new Date(frame.updated_at) : null;
  byId("updated-at").textContent =
    updated && !Number.isNaN(updated.getTime())
      ? updated.toLocaleTimeString()
      : (frame.updated_at ?? "—");
  renderAge();
}

function renderAge() {
  if (state.receivedAt === null) return;
  const seconds = Math.max(0, Math.round((Date.now() - state.receivedAt) / 1000));
  byId("received-ago").textContent = `(received ${seconds} s ago)`;
}

// --- reports ------------------------------------------------------------------------------------

function requestReports(asOf) {
  state.reports.pendingAsOf = asOf;
  pumpReports();
}

function pumpReports() {
  const reports = state.reports;
  if (reports.inFlight || reports.waiting || reports.pendingAsOf === null) return;
  const waitMs = reports.lastStartMs + reportsIntervalMinMs - performance.now();
  if (waitMs > 0) {
    reports.waiting = true;
    later(() => {
      reports.waiting = false;
      pumpReports();
    }, waitMs);
    return;
  }
  const asOf = reports.pendingAsOf;
  const generation = state.generation;
  reports.pendingAsOf = null;
  reports.inFlight = true;
  reports.lastStartMs = performance.now();
  reports.rounds += 1;
  const round = reports.rounds;
  fetchReports(asOf, generation)
    .then((retry) => {
      if (!retry) return;
      later(() => {
        if (reports.rounds === round && reports.pendingAsOf === null) requestReports(asOf);
      }, reportsRetryDelayMs);
    })
    .finally(() => {
      reports.inFlight = false;
      if (generation === state.generation) pumpReports();
    });
}

const reportPanels = [
  // `limit` caps every list of a report (the totals cover all): the page shows the waterfall, not
  // the contracts, and only the first customers of the AR aging and the MRR movements.
  ["ar-aging", `limit=${agingInvoicesLimit}`, renderAging],
  ["deferred-revenue", "limit=0", renderDeferredRevenue],
  ["mrr-movements", `limit=${mrrCustomersShown}`, renderMrrMovements],
];

// One round: the three reports for as_of, in parallel. True when one failed in a way a retry may
// cure (HTTP 5xx or no answer); a refused token (401, 403) or a bad request is not retried.
async function fetchReports(asOf, generation) {
  const tenant = state.tenant;
  const query = `tenant=${encodeURIComponent(tenant)}&as_of=${encodeURIComponent(asOf)}`;
  let retry = false;
  await Promise.all(
    reportPanels.map(async ([kind, extra, render]) => {
      const panel = byId(kind);
      let status;
      try {
        const response = await fetch(`/v1/reports/${kind}?${query}${extra ? `&${extra}` : ""}`, {
          headers: { Authorization: `Bearer ${state.token}` },
          cache: "no-store",
        });
        const body = await response.json().catch(() => null);
        if (generation !== state.generation) return;
        if (!response.ok || !body) {
          status = `could not load: ${describeError(response.status, body)}`;
          retry ||= response.status >= 500;
        } else if (body.tenant !== tenant) {
          status = "could not load: the answer was for another tenant";
        } else {
          render(body);
          panel.dataset.tenant = body.tenant;
          panel.dataset.asOf = body.as_of ?? asOf;
          panel.dataset.position = String(body.position ?? "");
          panel.dataset.loaded = "true";
          setPanelStatus(panel, `as of ${body.as_of ?? asOf}, position ${body.position ?? "?"}`);
          return;
        }
      } catch (error) {
        if (generation !== state.generation) return;
        status = `could not load: ${error.message}`;
        retry = true;
      }
      setPanelStatus(panel, status, true);
    }),
  );
  return retry;
}

function setPanelStatus(panel, text, failed = false) {
  const status = panel.querySelector(".status");
  status.textContent = text;
  status.classList.toggle("failed", failed);
}

function money(text) {
  return formatMoney(text, state.frame?.currency ?? null);
}

function fillSummary(listId, report, fields) {
  const list = byId(listId);
  list.replaceChildren(
    ...fields.map(([field, label]) => {
      const item = document.createElement("div");
      const name = document.createElement("dt");
      name.textContent = label;
      const value = document.createElement("dd");
      value.dataset.field = field;
      value.dataset.value = report[field] ?? "";
      value.textContent = formatMoney(report[field], report.currency);
      item.append(name, value);
      return item;
    }),
  );
}

function fillTable(tbodyId, rows) {
  byId(tbodyId).replaceChildren(
    ...rows.map((cells) => {
      const row = document.createElement("tr");
      for (const cell of cells) {
        const element = document.createElement("td");
        element.textContent = cell;
        row.append(element);
      }
      return row;
    }),
  );
}

function renderAging(report) {
  const format = (text) => formatMoney(text, report.currency);
  const columns = Object.entries(report.buckets || {}).map(([bucket, amount]) => ({
    key: bucket,
    label: bucket === "current" ? "current" : `${bucket} days`,
    from: "0",
    to: amount,
    amount,
    kind: bucket === "current" ? "bar current" : "bar overdue",
    valueText: format(amount),
  }));
  drawColumns(byId("ar-aging-chart"), columns, {
    caption: `Open receivables by days past due, total ${format(report.total)}`,
  });
  fillSummary("ar-aging-summary", report, [
    ["total", "Open receivables"],
    ["overdue", "Overdue"],
    ["unapplied", "Unapplied cash"],
    ["net", "Net"],
  ]);
  const invoices = report.invoices || [];
  fillTable(
    "ar-aging-invoices",
    invoices.map((invoice) => [
      invoice.invoice_id,
      invoice.customer_id,
      invoice.due_date,
      String(invoice.days_past_due),
      format(invoice.open),
    ]),
  );
  const total = report.invoices_total ?? invoices.length;
  byId("ar-aging-invoices-caption").textContent =
    total === 0
      ? "No open invoices."
      : `${invoices.length} of ${total} open invoices, oldest due date first`;
}

function renderDeferredRevenue(report) {
  const format = (text) => formatMoney(text, report.currency);
  const months = report.waterfall || [];
  const shown = months.slice(0, waterfallMonthsShown);
  const steps = shown.map((entry) => ({
    key: entry.month,
    label: entry.month,
    amount: entry.amount,
    sign: -1,
  }));
  if (months.length > shown.length) {
    const rest = months.slice(shown.length);
    steps.push({
      key: "later",
      label: `after ${shown[shown.length - 1].month}`,
      amount: addDecimals(rest.map((entry) => entry.amount)),
      sign: -1,
    });
  }
  const remaining = addDecimals(months.map((entry) => entry.amount));
  const chart = byId("deferred-revenue-chart");
  chart.dataset.remaining = remaining;
  if (months.length === 0) {
    chart.replaceChildren(emptyNote("Nothing left to recognise on the schedules known today."));
  } else {
    const start = { key: "remaining", label: "to recognise", amount: remaining };
    const { columns } = bridgeColumns(start, steps, format);
    drawColumns(chart, columns, {
      caption: `Revenue still to recognise, ${format(remaining)}, by month`,
    });
  }
  fillSummary("deferred-revenue-summary", report, [
    ["billed", "Billed to date"],
    ["recognized", "Recognised to date"],
    ["deferred", "Deferred"],
    ["unbilled", "Unbilled"],
  ]);
}

function renderMrrMovements(report) {
  const format = (text) => formatMoney(text, report.currency);
  const steps = [
    ["new", "new", 1],
    ["reactivation", "reactivation", 1],
    ["expansion", "expansion", 1],
    ["contraction", "contraction", -1],
    ["churn", "churn", -1],
  ].map(([key, label, sign]) => ({ key, label, amount: report[key] ?? "0", sign }));
  const start = { key: "starting_mrr", label: "start", amount: report.starting_mrr ?? "0" };
  const { columns, end } = bridgeColumns(start, steps, format);
  const ending = report.ending_mrr ?? end;
  columns.push({
    key: "ending_mrr",
    label: "end",
    from: "0",
    to: ending,
    amount: ending,
    kind: "total",
    valueText: format(ending),
  });
  const chart = byId("mrr-movements-chart");
  drawColumns(chart, columns, { caption: `MRR movements in ${report.month}` });
  const addsUp = isZero(addDecimals([end, negateDecimal(ending)]));
  chart.dataset.addsUp = String(addsUp);
  byId("mrr-month").textContent = report.month ?? "";
  byId("mrr-mismatch").hidden = addsUp;
  const customers = report.customers || [];
  fillTable(
    "mrr-customers",
    customers
      .slice(0, mrrCustomersShown)
      .map((customer) => [
        customer.customer_id,
        customer.movement,
        format(customer.starting_mrr),
        format(customer.ending_mrr),
      ]),
  );
  const moved = report.customers_total ?? customers.length;
  byId("mrr-customers-caption").textContent =
    moved === 0
      ? "No customer's MRR moved this month."
      : `${Math.min(customers.length, mrrCustomersShown)} of ${moved} customers whose MRR moved`;
}

function emptyNote(text) {
  const note = document.createElement("p");
  note.className = "empty";
  note.textContent = text;
  return note;
}

// --- page chrome --------------------------------------------------------------------------------

function describeError(status, body) {
  const error = body?.error ?? body?.rejected?.[0];
  return error?.message ? `${error.message} (HTTP ${status})` : `HTTP ${status}`;
}

function showBanner(kind, text) {
  const banner = byId("banner");
  banner.dataset.kind = kind;
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner(kind) {
  const banner = byId("banner");
  if (banner.dataset.kind === kind) {
    banner.hidden = true;
    banner.textContent = "";
    delete banner.dataset.kind;
  }
}

function clearDashboard() {
  for (const element of document.querySelectorAll("[data-kpi]")) {
    element.dataset.value = "";
    element.dataset.shown = "false";
    element.textContent = "…";
  }
  for (const [kind] of reportPanels) {
    const panel = byId(kind);
    for (const key of ["tenant", "asOf", "position", "loaded"]) delete panel.dataset[key];
    for (const chart of panel.querySelectorAll(".chart-area")) chart.replaceChildren();
    for (const part of panel.querySelectorAll("tbody, dl.summary")) part.replaceChildren();
    setPanelStatus(panel, "waiting for the first update…");
  }
  renderAlerts([]);
  renderFreshness();
  for (const kind of ["config", "connection", "gateway"]) hideBanner(kind);
}

function main() {
  buildKpis();
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = byId("token-input").value.trim();
    const tenant = byId("tenant-input").value.trim();
    if (!token) return showSignIn("Paste a token first.");
    signIn(token, tenant || null);
  });
  byId("change-token").addEventListener("click", signOut);
  setInterval(renderAge, 1000);
  const fromUrl = takeFromUrl();
  if (fromUrl.tenant) sessionStorage.setItem(tenantStorageKey, fromUrl.tenant);
  const token = fromUrl.token || sessionStorage.getItem(tokenStorageKey);
  if (token) {
    signIn(token, sessionStorage.getItem(tenantStorageKey));
  } else {
    showSignIn("");
  }
}

main();
