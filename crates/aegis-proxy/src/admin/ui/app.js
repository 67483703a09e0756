// The admin /ui page: polls /metrics (Prometheus text) and /carbon (JSON) every second and
// shows traffic, errors, latency, TLS groups and the carbon-aware clusters. No build step.
"use strict";

// An admin token, when reads need one, comes in the URL fragment: /ui#token=...
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
let previous = null;

/** Samples of the Prometheus text format: [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2];
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples, name, keep = () => true) {
  return samples
    .filter((s) => s.name === name && keep(s.labels))
    .reduce((total, s) => total + s.value, 0);
}

/** Cumulative bucket counts by upper bound, summed over every label set. */
function buckets(samples, name) {
  const byBound = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byBound.set(le, (byBound.get(le) || 0) + s.value);
  }
  return [...byBound.entries()].sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of a histogram given as cumulative [bound, count] pairs (as PromQL does). */
function quantile(q, cumulative) {
  const total = cumulative.length ? cumulative[cumulative.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, count] of cumulative) {
    if (count >= rank) {
      if (bound === Infinity) return lowerBound;
      const inBucket = count - lowerCount;
      return inBucket > 0 ? lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / inBucket : bound;
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

function minus(now, before) {
  if (!before) return now;
  const earlier = new Map(before);
  return now.map(([bound, count]) => [bound, count - (earlier.get(bound) || 0)]);
}

function seconds(value) {
  if (value === null) return "–";
  return value < 1 ? (value * 1000).toFixed(value < 0.01 ? 2 : 1) + " ms" : value.toFixed(2) + " s";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function renderGroups(samples) {
  const byGroup = new Map();
  for (const s of samples) {
    if (s.name !== "aegis_tls_handshakes_total") continue;
    byGroup.set(s.labels.group, (byGroup.get(s.labels.group) || 0) + s.value);
  }
  const total = [...byGroup.values()].reduce((a, b) => a + b, 0);
  const body = document.querySelector("#groups tbody");
  body.replaceChildren();
  for (const [group, count] of [...byGroup.entries()].sort((a, b) => b[1] - a[1])) {
    const row = body.insertRow();
    row.dataset.group = group;
    cell(row, group, group.includes("MLKEM") ? "pq" : "");
    cell(row, String(count));
    cell(row, total ? ((100 * count) / total).toFixed(1) + " %" : "–");
  }
}

function renderCarbon(page) {
  const box = document.getElementById("carbon");
  const clusters = Object.entries(page.clusters || {});
  if (!clusters.length) return;
  box.replaceChildren();
  for (const [name, cluster] of clusters) {
    const title = document.createElement("h3");
    const next = cluster.next && cluster.next.region;
    title.textContent = `${name}: ${cluster.policy}, next request to ${next || "none"} (${cluster.next ? cluster.next.reason : ""})`;
    box.append(title);
    const table = document.createElement("table");
    table.dataset.cluster = name;
    const head = table.createTHead().insertRow();
    for (const h of ["region", "intensity g/kWh", "latency", "share", "healthy", "eligible"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    const body = table.createTBody();
    for (const region of cluster.regions) {
      const row = body.insertRow();
      row.dataset.region = region.name;
      if (region.name === next) row.className = "chosen";
      cell(row, region.name);
      cell(row, region.intensity === null ? "no data" : region.intensity.toFixed(0) + (region.freshness === "fresh" ? "" : ` (${region.freshness})`));
      cell(row, region.latency_ms === null ? "–" : region.latency_ms.toFixed(1) + " ms");
      cell(row, region.share === null || region.share === undefined ? "–" : (100 * region.share).toFixed(0) + " %");
      cell(row, region.healthy ? "yes" : "no");
      cell(row, region.eligible ? "yes" : region.why);
    }
    box.append(table);
  }
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const [metricsText, carbon] = await Promise.all([
      fetch("/metrics", { headers }).then((r) => { if (!r.ok) throw new Error("/metrics " + r.status); return r.text(); }),
      fetch("/carbon", { headers }).then((r) => (r.ok ? r.json() : { clusters: {} })),
    ]);
    const samples = parseMetrics(metricsText);
    const now = performance.now();
    const total = sum(samples, "aegis_http_requests_total");
    const errors = sum(samples, "aegis_http_requests_total", (l) => Number(l.status) >= 500);
    const latency = buckets(samples, "aegis_request_duration_seconds_bucket");
    const base = previous && total > previous.total ? previous : null;
    const elapsed = previous ? (now - previous.at) / 1000 : 0;
    const requests = total - (base ? base.total : 0);
    const failed = errors - (base ? base.errors : 0);
    const recent = minus(latency, base ? base.latency : null);
    document.getElementById("rps").textContent = previous && elapsed > 0 ? ((total - previous.total) / elapsed).toFixed(1) : "–";
    document.getElementById("errors").textContent = requests > 0 ? ((100 * failed) / requests).toFixed(2) + " %" : "–";
    document.getElementById("p50").textContent = seconds(quantile(0.5, recent));
    document.getElementById("p99").textContent = seconds(quantile(0.99, recent));
    document.getElementById("total").textContent = String(total);
    document.getElementById("connections").textContent = String(sum(samples, "aegis_downstream_connections_active"));
    const build = samples.find((s) => s.name === "aegis_build_info");
    if (build) document.getElementById("build").textContent = `${build.labels.version} (${build.labels.commit})`;
    renderGroups(samples);
    renderCarbon(carbon);
    previous = { at: now, total, errors, latency };
    status.textContent = "live · " + new Date().toLocaleTimeString();
    status.className = "status";
    document.body.dataset.updated = String(Number(document.body.dataset.updated || 0) + 1);
  } catch (error) {
    status.textContent = "cannot reach the admin API: " + error.message;
    status.className = "status error";
  }
}

tick();
setInterval(tick, 1000);
