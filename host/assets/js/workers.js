// Workers, refreshed every 2 s: labels, slots used of total, capacity
// reserved by jobs against what the heartbeats measure, draining, and the
// CPU and memory of each job each one runs.

import { h, fill, link, chips, bytes, every } from "./dom.js";
import { api } from "./api.js";

export function showWorkers(app) {
  const body = h("tbody", { id: "workers-body" });
  fill(app,
    h("div", { class: "toolbar" }, h("h1", { text: "Workers" })),
    h("table", { class: "list", id: "workers-table" },
      h("thead", null, h("tr", null, ["worker", "state", "labels", "slots", "CPU reserved / real", "memory reserved / real", "jobs"].map((c) => h("th", { text: c })))),
      body));
  const stop = every(2000, async () => {
    const { workers } = await api("/api/v1/workers");
    fill(body, workers.map((w) => {
      const m = w.metrics;
      const states = [w.connected ? "connected" : "disconnected"];
      if (m.draining) states.push("draining");
      if (w.retiring) states.push("retiring");
      return h("tr", { dataset: { id: w.id } },
        h("td", null, h("div", { text: w.name }), h("div", { class: "muted small", text: `${w.id}${w.pool ? ` · pool ${w.pool}` : ""}` })),
        h("td", null, states.map((s) => h("span", { class: `badge w-${s}`, text: s }))),
        h("td", null, chips(w.labels)),
        h("td", { text: `${w.used_slots} / ${w.slots}` }),
        h("td", { text: `${w.reserved.cpu_millis} of ${w.capacity.cpu_millis} mCPU reserved · machine ${m.cpu_percent.toFixed(0)} %` }),
        h("td", { text: `${w.reserved.memory_mb} of ${w.capacity.memory_mb} MiB reserved · ${bytes(m.memory_used_bytes)} of ${bytes(m.memory_total_bytes)} used` }),
        h("td", null, (w.job_usage || []).map((u) => h("div", { class: "small" },
          link(`/jobs/${encodeURIComponent(u.job_id)}`, u.job_id.slice(0, 8)),
          ` ${u.cpu_percent.toFixed(1)} % CPU, ${bytes(u.memory_bytes)}`))));
    }));
  });
  return { stop };
}
