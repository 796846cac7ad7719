// The dashboard's entry: routes paths to pages (`/jobs`, `/jobs/{id}`,
// `/workers`, `/plugins`) without reloads, and owns the token prompt.
// Each page function fills `#app` and answers `{stop()}`, called when the
// page is left, which ends its refresh timer and streams.

import { navigate, notice } from "./dom.js";
import { token, setToken } from "./api.js";
import { showJobs } from "./jobs.js";
import { showJob } from "./job.js";
import { showWorkers } from "./workers.js";
import { showPlugins } from "./plugins.js";

let page = null;

function route() {
  if (page) page.stop();
  const app = document.getElementById("app");
  const path = location.pathname;
  const job = /^\/jobs\/([0-9a-fA-F-]{36})$/.exec(path);
  let section = "jobs";
  if (job) page = showJob(app, job[1]);
  else if (path === "/workers") { section = "workers"; page = showWorkers(app); }
  else if (path === "/plugins") { section = "plugins"; page = showPlugins(app); }
  else page = showJobs(app);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.section === section);
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

const dialog = document.getElementById("token-dialog");
const input = document.getElementById("token-input");
function askToken() {
  input.value = "";
  if (!dialog.open) dialog.showModal();
}
document.getElementById("token-button").addEventListener("click", askToken);
window.addEventListener("hodei:unauthorized", askToken);
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "save" && input.value) setToken(input.value.trim());
  if (dialog.returnValue === "clear") setToken(null);
  input.value = "";
  if (dialog.returnValue !== "cancel") notice("");
  document.getElementById("token-button").textContent = token() ? "API token ✓" : "API token";
  if (dialog.returnValue !== "cancel") route();
});
document.getElementById("token-button").textContent = token() ? "API token ✓" : "API token";

route();
