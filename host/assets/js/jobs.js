// The job list: one request for the page every 1.5 s (not one per job),
// filtered by state on the host and by label and name here; a cancel
// button per unfinished job; the submit form behind "New job".

import { h, fill, link, badge, chips, when, every, notice } from "./dom.js";
import { api } from "./api.js";
import { submitForm } from "./submit.js";

const STATES = ["PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"]);
const LIMIT = 200;

/** `k=v` or `k` against a job's labels. */
function labelMatches(labels, filter) {
  if (!filter) return true;
  const eq = filter.indexOf("=");
  if (eq < 0) return Object.prototype.hasOwnProperty.call(labels, filter);
  return labels[filter.slice(0, eq)] === filter.slice(eq + 1);
}

export function showJobs(app) {
  const params = new URLSearchParams(location.search);
  const state = h("select", { id: "filter-state", onchange: () => { remember(); refreshNow(); } },
    h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s }, s)));
  state.value = params.get("state") || "";
  const label = h("input", { id: "filter-label", placeholder: "label k=v", value: params.get("label") || "", oninput: () => { remember(); draw(); } });
  const name = h("input", { id: "filter-name", placeholder: "name contains", value: params.get("name") || "", oninput: () => { remember(); draw(); } });
  const formBox = h("div", { class: "submit-box", id: "submit-box", hidden: true }, submitForm());
  const toggle = h("button", { type: "button", id: "new-job", onclick: () => { formBox.hidden = !formBox.hidden; } }, "New job");
  const body = h("tbody", { id: "jobs-body" });
  const summary = h("span", { class: "muted", id: "jobs-summary" });
  fill(app,
    h("div", { class: "toolbar" }, h("h1", { text: "Jobs" }), state, label, name, toggle, summary),
    formBox,
    h("table", { class: "list", id: "jobs-table" },
      h("thead", null, h("tr", null, ["name", "state", "labels", "attempt", "worker", "exit", "created", ""].map((c) => h("th", { text: c })))),
      body));
  let jobs = [];

  function remember() {
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    if (label.value) q.set("label", label.value);
    if (name.value) q.set("name", name.value);
    const s = q.toString();
    history.replaceState(null, "", s ? `/jobs?${s}` : "/jobs");
  }

  function draw() {
    const shown = jobs.filter((j) => labelMatches(j.labels, label.value.trim()) && j.name.includes(name.value));
    summary.textContent = `${shown.length} of the ${jobs.length} newest`;
    fill(body, shown.map((j) => h("tr", { dataset: { id: j.id, state: j.state } },
      h("td", null, link(`/jobs/${encodeURIComponent(j.id)}`, j.name)),
      h("td", null, badge(j.state), j.pending_reason ? h("div", { class: "muted small", text: j.pending_reason }) : null),
      h("td", null, chips(j.labels)),
      h("td", { text: `${j.attempt}/${j.max_attempts}` }),
      h("td", { class: "small", text: j.worker_id || "–" }),
      h("td", { text: j.exit_code ?? "–" }),
      h("td", { class: "small", text: when(j.created_at) }),
      h("td", null, TERMINAL.has(j.state) || j.cancel_requested ? null : h("button", { type: "button", class: "danger small", onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api(`/api/v1/jobs/${encodeURIComponent(j.id)}/cancel`, { method: "POST" });
          refreshNow();
        } catch (err) {
          notice(err.message);
        }
      } }, "Cancel")))));
  }

  const refresh = async () => {
    const q = state.value ? `&state=${state.value}` : "";
    jobs = (await api(`/api/v1/jobs?limit=${LIMIT}${q}`)).jobs;
    draw();
  };
  const refreshNow = () => refresh().catch((err) => notice(err.message));
  const stop = every(1500, refresh);
  return { stop };
}
