// Building DOM from data, safely: text goes in with textContent (a text
// node), never through innerHTML, so a job name or log line holding
// `<img onerror=...>` stays text. Attributes are set one by one; handlers
// are functions, never strings.

/** An element: `h("a", {class: "x", href: url, onclick: fn}, child, ...)`.
 *  Children are nodes, strings (text), arrays of those, or null. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Removes every child. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** Replaces every child. */
export function fill(el, ...children) {
  clear(el);
  append(el, children);
}

/** Goes to a page of the dashboard without reloading it. */
export function navigate(url) {
  history.pushState(null, "", url);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

/** A link to a page of the dashboard. */
export function link(href, ...children) {
  return h("a", { href, "data-nav": true }, ...children);
}

/** `1.5 GiB`. */
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** `2026-12-03 07:55:16` (UTC) from RFC 3339, or a dash. */
export function when(ts) {
  return ts ? ts.slice(0, 19).replace("T", " ") : "–";
}

/** A state badge. */
export function badge(state) {
  return h("span", { class: `badge s-${String(state).toLowerCase()}`, text: state });
}

/** `k=v` chips for a label map. */
export function chips(map) {
  return Object.entries(map || {}).map(([k, v]) => h("span", { class: "chip", text: `${k}=${v}` }));
}

/** Runs `fn` now and every `ms`; returns a stop function. An error shows in
 *  the notice line and the refresh goes on. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await fn();
    } catch (err) {
      notice(err.message);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Shows a short message in the header (empty clears it). */
export function notice(message) {
  const el = document.getElementById("notice");
  if (el) el.textContent = message || "";
}
