// The REST API as the dashboard uses it: JSON calls, the bearer token, and
// server-sent events read with fetch (EventSource cannot send a header, so
// neither `Authorization` nor `Last-Event-ID` of our choosing).

const TOKEN_KEY = "hodei.api-token";

/** The token of this tab, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps (or with null forgets) the token for this tab. */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A failed call: the API's error shape. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? `${body.error}: ${body.message}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const out = new Headers(extra || {});
  const t = token();
  if (t) out.set("Authorization", `Bearer ${t}`);
  return out;
}

/** Calls the API; parses JSON. `body` objects go as JSON, Blobs and
 *  ArrayBuffers as they are. `raw: true` answers the Response. */
export async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: headers(options.headers), signal: options.signal };
  if (options.body !== undefined) {
    if (options.body instanceof Blob || options.body instanceof ArrayBuffer) {
      init.body = options.body;
    } else {
      init.body = JSON.stringify(options.body);
      init.headers.set("Content-Type", "application/json");
    }
  }
  const res = await fetch(path, init);
  if (res.status === 401) window.dispatchEvent(new Event("hodei:unauthorized"));
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch { body = null; }
    throw new ApiError(res.status, body);
  }
  if (options.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

/** Reads server-sent events from `path`, yielding `{event, id, data}`.
 *  `lastEventId` resumes after that event. Ends when the body ends. */
export async function* events(path, { lastEventId, signal } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId !== undefined && lastEventId !== null) extra["Last-Event-ID"] = String(lastEventId);
  const res = await fetch(path, { headers: headers(extra), signal });
  if (res.status === 401) window.dispatchEvent(new Event("hodei:unauthorized"));
  if (!res.ok) throw new ApiError(res.status, null);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let start = 0;
    for (;;) {
      const nl = buffer.indexOf("\n", start);
      if (nl < 0) break;
      const line = buffer.slice(start, nl);
      start = nl + 1;
      if (line === "") {
        if (event.data.length) yield { event: event.event, id: event.id, data: event.data.join("\n") };
        event = { event: "message", id: null, data: [] };
      } else if (line.startsWith("data:")) {
        event.data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      } else if (line.startsWith("event:")) {
        event.event = line.slice(6).trim();
      } else if (line.startsWith("id:")) {
        event.id = line.slice(3).trim();
      }
    }
    buffer = buffer.slice(start);
  }
}
