// Plugins and pools, refreshed every 3 s: scheduling policies and secret
// maskers (calls, errors, p50/p99, last error; upload a component;
// activate a policy with its config, set the masker chain; remove an
// uploaded one) and worker pools.

import { h, fill, chips, every, notice } from "./dom.js";
import { api } from "./api.js";

function lastError(e) {
  if (!e) return "–";
  if (typeof e === "string") return e;
  return `${e.function || ""}: ${e.message || ""}${e.at ? ` (${e.at.slice(0, 19)})` : ""}`;
}

function figures(p) {
  return [
    h("td", { text: p.calls ?? "–" }),
    h("td", { text: p.errors ?? "–" }),
    h("td", { text: p.p50_us !== undefined ? `${p.p50_us} µs` : "–" }),
    h("td", { text: p.p99_us !== undefined ? `${p.p99_us} µs` : "–" }),
    h("td", { class: "small error-text", text: lastError(p.last_error) }),
  ];
}

const HEAD = ["calls", "errors", "p50", "p99", "last error"];

/** An upload form: a name and a `.wasm` file, posted to `path?name=`. */
function uploadForm(id, path, what, done) {
  const name = h("input", { id: `${id}-name`, placeholder: "name", pattern: "[a-z0-9_-]+" });
  const file = h("input", { id: `${id}-file`, type: "file", accept: ".wasm,application/wasm" });
  return h("form", { class: "inline", id, onsubmit: async (e) => {
    e.preventDefault();
    if (!file.files[0] || !name.value) return notice("choose a name and a .wasm file");
    try {
      await api(`${path}?name=${encodeURIComponent(name.value)}`, {
        method: "POST", body: await file.files[0].arrayBuffer(), headers: { "Content-Type": "application/wasm" },
      });
      notice(`uploaded ${name.value}`);
      done();
    } catch (err) {
      notice(err.message);
    }
  } }, name, file, h("button", { type: "submit" }, `Upload ${what}`));
}

export function showPlugins(app) {
  const policies = h("tbody", { id: "policies-body" });
  const maskers = h("div", { id: "maskers" });
  const pools = h("tbody", { id: "pools-body" });
  const chainInput = h("input", { id: "masker-chain", class: "config", placeholder: "literal, patterns" });
  const chainForm = h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const names = chainInput.value.split(",").map((n) => n.trim()).filter(Boolean);
    const configs = new Map((chain || []).map((c) => [c.name, c.config]));
    act(() => api("/api/v1/maskers/chain", { method: "PUT", body: { maskers: names.map((name) => ({ name, config: configs.get(name) || "" })) } }));
  } }, chainInput, h("button", { type: "submit" }, "Set chain"));
  let chain = null;
  fill(app,
    h("div", { class: "toolbar" }, h("h1", { text: "Scheduling policies" }), uploadForm("upload-policy", "/api/v1/policies", "policy", () => refreshNow())),
    h("table", { class: "list", id: "policies-table" },
      h("thead", null, h("tr", null, ["policy", "source", ...HEAD, ""].map((c) => h("th", { text: c })))), policies),
    h("div", { class: "toolbar" }, h("h1", { text: "Secret maskers" }), chainForm, uploadForm("upload-masker", "/api/v1/maskers", "masker", () => refreshNow())),
    maskers,
    h("div", { class: "toolbar" }, h("h1", { text: "Worker pools" })),
    h("table", { class: "list", id: "pools-table" },
      h("thead", null, h("tr", null, ["pool", "provider", "state", "min–max", "workers", "demand", "create p50 / max", "last error"].map((c) => h("th", { text: c })))), pools));

  async function refresh() {
    const [p, m, pl] = await Promise.all([
      api("/api/v1/policies"),
      api("/api/v1/maskers").catch((err) => (err.status === 404 ? null : Promise.reject(err))),
      api("/api/v1/pools"),
    ]);
    drawPolicies(p);
    drawMaskers(m);
    drawPools(pl.pools);
  }
  const refreshNow = () => refresh().catch((err) => notice(err.message));

  function drawPolicies({ active, policies: list }) {
    // Leave the rows alone while someone types a config.
    if (policies.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
    fill(policies, list.map((p) => {
      const config = h("input", { class: "config", placeholder: "config", value: p.active ? active.config : "" });
      return h("tr", { dataset: { name: p.name } },
        h("td", null, p.name, p.active ? h("span", { class: "badge s-running", text: "active" }) : null),
        h("td", { text: typeof p.source === "string" ? p.source : JSON.stringify(p.source) }),
        ...figures(p),
        h("td", { class: "actions" }, config,
          h("button", { type: "button", onclick: () => act(() => api("/api/v1/policies/active", { method: "PUT", body: { name: p.name, config: config.value } })) }, "Activate"),
          p.source === "uploaded" && !p.active
            ? h("button", { type: "button", class: "danger", onclick: () => act(() => api(`/api/v1/policies/${encodeURIComponent(p.name)}`, { method: "DELETE" })) }, "Remove")
            : null));
    }));
  }

  async function act(call) {
    try {
      await call();
      notice("");
      if (document.activeElement) document.activeElement.blur();
      refreshNow();
    } catch (err) {
      notice(err.message);
    }
  }

  function drawMaskers(m) {
    if (!m) {
      fill(maskers, h("p", { class: "muted", text: "This host has no masker API (GET /api/v1/maskers)." }));
      return;
    }
    chain = m.chain || [];
    const names = chain.map((c) => c.name).join(", ");
    if (document.activeElement !== chainInput) chainInput.value = names;
    const stats = m.masking || {};
    fill(maskers,
      h("p", { id: "masker-chain-now" }, "chain: ", h("code", { text: chain.map((c) => (c.config ? `${c.name} (${c.config})` : c.name)).join(" → ") || "–" }),
        h("span", { class: "muted small", text: `  ·  ${stats.batches ?? 0} batches, ${stats.lines ?? 0} lines masked, ${stats.fallbacks ?? 0} fallbacks to the native masker, ${stats.withheld ?? 0} lines withheld` })),
      h("table", { class: "list", id: "maskers-table" },
        h("thead", null, h("tr", null, ["masker", "source", "in chain", ...HEAD, ""].map((c) => h("th", { text: c })))),
        h("tbody", { id: "maskers-body" }, (m.maskers || []).map((k) => h("tr", { dataset: { name: k.name } },
          h("td", { text: k.name }),
          h("td", { text: k.source }),
          h("td", { text: k.position === null || k.position === undefined ? "–" : `#${k.position + 1}` }),
          ...figures(k),
          h("td", null, k.source === "uploaded" && (k.position === null || k.position === undefined)
            ? h("button", { type: "button", class: "danger", onclick: () => act(() => api(`/api/v1/maskers/${encodeURIComponent(k.name)}`, { method: "DELETE" })) }, "Remove")
            : null))))));
  }

  function drawPools(list) {
    fill(pools, list.map((p) => h("tr", { dataset: { name: p.name } },
      h("td", null, p.name, " ", chips(p.labels)),
      h("td", { text: p.provider }),
      h("td", null, h("span", { class: `badge pool-${p.state}`, text: p.state })),
      h("td", { text: `${p.min}–${p.max}` }),
      h("td", { text: Object.entries(p.counts || {}).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", ") || "0" }),
      h("td", { text: p.demand }),
      h("td", { text: p.create_latency ? `${p.create_latency.p50_ms} / ${p.create_latency.max_ms} ms` : "–" }),
      h("td", { class: "small error-text", text: p.last_create_error || p.last_error || "–" }))));
  }

  const stop = every(3000, refresh);
  return { stop };
}
