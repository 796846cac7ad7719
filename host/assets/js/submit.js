// The submit form: a bash script or an argv, labels, env, secrets
// (write-only: sent once, cleared from the form, never shown), resources,
// priority, timeout, attempts. A refusal shows the API's problems, field
// by field.

import { h, fill, navigate } from "./dom.js";
import { api } from "./api.js";

/** `k=v` per line into an object; throws naming the bad line. */
function pairs(text, what) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`${what}: "${line}" is not NAME=VALUE`);
    out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

function number(input) {
  return input.value === "" ? undefined : Number(input.value);
}

export function submitForm() {
  const field = (label, input) => h("label", { class: "field" }, h("span", { text: label }), input);
  const name = h("input", { name: "name", id: "submit-name", placeholder: "defaults to the command" });
  const mode = h("select", { name: "mode", id: "submit-mode" }, h("option", { value: "script" }, "bash script"), h("option", { value: "args" }, "argv (one argument per line)"));
  const command = h("textarea", { name: "command", id: "submit-command", rows: "6", spellcheck: "false", placeholder: "echo hello" });
  const labels = h("textarea", { name: "labels", id: "submit-labels", rows: "2", placeholder: "zone=a" });
  const env = h("textarea", { name: "env", id: "submit-env", rows: "2", placeholder: "NAME=value" });
  const secrets = h("textarea", { name: "secrets", id: "submit-secrets", class: "secret", rows: "2", autocomplete: "off", spellcheck: "false", placeholder: "TOKEN=value (write-only)" });
  const cpu = h("input", { type: "number", min: "0", id: "submit-cpu", placeholder: "0" });
  const mem = h("input", { type: "number", min: "0", id: "submit-memory", placeholder: "0" });
  const priority = h("input", { type: "number", id: "submit-priority", placeholder: "0" });
  const timeout = h("input", { type: "number", min: "1", id: "submit-timeout", placeholder: "none" });
  const attempts = h("input", { type: "number", min: "1", id: "submit-attempts", placeholder: "3" });
  const problems = h("div", { class: "problems", id: "submit-problems", role: "alert" });
  const form = h("form", { class: "submit", id: "submit-form", onsubmit: async (e) => {
    e.preventDefault();
    fill(problems);
    let body;
    try {
      body = {
        name: name.value || undefined,
        labels: pairs(labels.value, "labels"),
        env: pairs(env.value, "env"),
        secrets: pairs(secrets.value, "secrets"),
        resources: { cpu_millis: number(cpu) || 0, memory_mb: number(mem) || 0 },
        priority: number(priority) || 0,
        timeout_secs: number(timeout),
        max_attempts: number(attempts),
      };
      if (mode.value === "script") body.command = command.value;
      else body.args = command.value.split("\n").filter((a, i, all) => a !== "" || i < all.length - 1);
    } catch (err) {
      fill(problems, err.message);
      return;
    }
    try {
      const job = await api("/api/v1/jobs", { method: "POST", body });
      secrets.value = "";
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      const details = (err.body && err.body.details) || [];
      fill(problems, h("p", { text: err.message }), h("ul", null, details.map((d) => h("li", { text: `${d.field}: ${d.problem}` }))));
    }
  } },
  h("div", { class: "grid" },
    field("name", name), field("kind", mode),
    h("label", { class: "field wide" }, h("span", { text: "command" }), command),
    field("labels (NAME=VALUE per line)", labels), field("env (NAME=VALUE per line)", env),
    field("secrets (write-only)", secrets),
    field("CPU (millicores)", cpu), field("memory (MiB)", mem), field("priority", priority),
    field("timeout (s)", timeout), field("attempts", attempts)),
  problems,
  h("button", { type: "submit", id: "submit-go" }, "Submit"));
  return form;
}
