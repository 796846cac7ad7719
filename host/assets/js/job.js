// One job: its facts (state, attempts, worker, exit code, reasons, live
// usage) refreshed every 1.5 s while it is not finished, a cancel button,
// and its log (logview.js).

import { h, fill, badge, chips, bytes, when, every, notice } from "./dom.js";
import { api } from "./api.js";
import { LogView } from "./logview.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"]);

export function showJob(app, id) {
  const title = h("h1", { id: "job-name" });
  const state = h("span", { id: "job-state" });
  const cancel = h("button", { type: "button", id: "job-cancel", class: "danger", onclick: async () => {
    cancel.disabled = true;
    try {
      show(await api(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }));
    } catch (err) {
      notice(err.message);
    }
  } }, "Cancel");
  const facts = h("dl", { class: "facts", id: "job-facts" });
  let job = null;
  let stopRefresh = null;
  const refresh = async () => {
    show(await api(`/api/v1/jobs/${encodeURIComponent(id)}`));
    if (TERMINAL.has(job.state) && stopRefresh) stopRefresh();
  };
  const log = new LogView(id, () => refresh().catch((err) => notice(err.message)));
  fill(app, h("div", { class: "job-head" }, title, state, cancel), facts, log.el);
  stopRefresh = every(1500, refresh);

  function show(view) {
    job = view;
    title.textContent = view.name;
    fill(state, badge(view.state), view.cancel_requested && !TERMINAL.has(view.state) ? h("span", { class: "muted", text: " cancel requested" }) : null);
    state.dataset.state = view.state;
    cancel.disabled = TERMINAL.has(view.state) || view.cancel_requested;
    const usage = view.usage
      ? `${view.usage.cpu_percent.toFixed(1)} % CPU, ${bytes(view.usage.memory_bytes)} RSS, ${view.usage.processes} processes`
      : null;
    const command = view.command !== undefined ? view.command : (view.args || []).join(" ");
    const rows = [
      ["id", view.id],
      ["attempt", `${view.attempt} of ${view.max_attempts}`],
      ["worker", view.worker_id],
      ["exit code", view.exit_code],
      ["reason", view.reason],
      ["pending because", view.pending_reason],
      ["usage", usage],
      ["created", when(view.created_at)],
      ["started", view.started_at ? when(view.started_at) : null],
      ["finished", view.finished_at ? when(view.finished_at) : null],
      ["priority", view.priority],
      ["timeout", view.timeout_secs ? `${view.timeout_secs} s` : null],
      ["resources", `${view.resources.cpu_millis} mCPU, ${view.resources.memory_mb} MiB`],
    ];
    const dts = [];
    for (const [k, v] of rows) {
      if (v === null || v === undefined) continue;
      dts.push(h("dt", { text: k }), h("dd", { text: v, dataset: { fact: k } }));
    }
    dts.push(h("dt", { text: "labels" }), h("dd", null, chips(view.labels)));
    dts.push(h("dt", { text: "env" }), h("dd", null, chips(view.env)));
    if (view.secret_names.length) {
      dts.push(h("dt", { text: "secrets" }), h("dd", { text: view.secret_names.join(", ") + " (values never shown)" }));
    }
    dts.push(h("dt", { text: view.command !== undefined ? "script" : "argv" }), h("dd", null, h("pre", { class: "command", text: command })));
    fill(facts, dts);
  }

  return { stop() { stopRefresh(); log.stop(); } };
}
