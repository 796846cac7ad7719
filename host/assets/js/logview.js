// A job's log, windowed: only the rows in view exist in the DOM (one pool
// of row elements, reused), and only the lines near the view are kept in
// memory (at most KEEP), so a log of millions of lines costs what a screen
// costs. Lines come from two places: `logs/page` (a window by sequence,
// fetched as the view moves; the page opens at the tail) and the SSE
// stream (`follow=true`, resumed with `Last-Event-ID` after the last line
// held), which carries new lines live. Search runs on the host over the
// whole stored log (`logs/search`) and answers every matching sequence.

import { h, fill } from "./dom.js";
import { api, events, token } from "./api.js";
import { PLAIN, endStyle, renderLine, styleSpan } from "./ansi.js";

/** Height of one line: fixed, so line N sits at a computed offset. */
const LINE_PX = 18;
/** Tallest scroll area used; beyond it the scrollbar maps proportionally
 *  to line numbers (browsers cap an element's height near 16–33 Mpx). */
const MAX_SCROLL_PX = 15_000_000;
/** Lines per `logs/page` request. */
const PAGE = 2000;
/** Lines kept in memory; those farthest from the view are dropped. */
const KEEP = 30_000;
/** Lines walked back to find the colours a line starts with. */
const STYLE_WALK = 5_000;

export class LogView {
  /** `onDone(done)` is called when the job's log ends. */
  constructor(jobId, onDone) {
    this.jobId = jobId;
    this.onDone = onDone;
    this.lines = new Map(); // sequence -> {line, stream, timestamp, end?}
    this.total = 0; // the last sequence known; sequences are dense from 1
    this.follow = !/^#L\d+$/.test(location.hash);
    this.timestamps = false;
    this.highlight = null;
    this.query = "";
    this.matches = [];
    this.matchSet = new Set();
    this.matchAt = -1;
    this.fetching = false;
    this.stopped = false;
    this.queued = false;
    this.rows = [];
    this.abort = new AbortController();
    this.base = `/api/v1/jobs/${encodeURIComponent(jobId)}/logs`;
    this.build();
    this.onHash = () => this.applyHash();
    window.addEventListener("hashchange", this.onHash);
    this.resize = new ResizeObserver(() => this.queueRender());
    this.resize.observe(this.viewport);
    this.start();
  }

  build() {
    this.followBox = h("input", { type: "checkbox", id: "log-follow", checked: this.follow, onchange: () => {
      this.follow = this.followBox.checked;
      if (this.follow) this.queueRender();
    } });
    this.tsBox = h("input", { type: "checkbox", id: "log-timestamps", onchange: () => {
      this.timestamps = this.tsBox.checked;
      this.queueRender(true);
    } });
    this.searchBox = h("input", { type: "search", id: "log-search", placeholder: "search the whole log", autocomplete: "off" });
    this.count = h("span", { class: "count", id: "log-count" });
    this.info = h("span", { class: "info", id: "log-info" });
    const download = h("a", { href: `${this.base}/raw`, download: `job-${this.jobId}.log`, id: "log-download", onclick: (e) => this.download(e) }, "Download raw");
    const tools = h("div", { class: "log-tools" },
      h("label", null, this.followBox, " follow"),
      h("label", null, this.tsBox, " timestamps (UTC)"),
      h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); this.search(this.searchBox.value); } },
        this.searchBox,
        h("button", { type: "submit", id: "log-search-go" }, "Search"),
        h("button", { type: "button", id: "log-prev", title: "previous match", onclick: () => this.step(-1) }, "↑"),
        h("button", { type: "button", id: "log-next", title: "next match", onclick: () => this.step(1) }, "↓"),
        this.count),
      download,
      this.info);
    this.spacer = h("div", { class: "log-spacer" });
    this.rowsEl = h("div", { class: "log-rows" });
    this.viewport = h("div", { class: "log-view", id: "log-view", tabindex: "0", onscroll: () => {
      this.follow = this.atBottom();
      this.followBox.checked = this.follow;
      this.queueRender();
    } }, this.spacer, this.rowsEl);
    this.el = h("section", { class: "log" }, tools, this.viewport);
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
    this.resize.disconnect();
    window.removeEventListener("hashchange", this.onHash);
  }

  async start() {
    const page = await api(`${this.base}/page?tail=${PAGE}`, { signal: this.abort.signal });
    this.add(page.lines);
    this.total = Math.max(this.total, page.head);
    this.render();
    this.applyHash();
    this.live(page.head);
  }

  /** Follows new lines over SSE from `after`, reconnecting where it left. */
  async live(after) {
    let last = after;
    while (!this.stopped) {
      try {
        for await (const ev of events(`${this.base}?follow=true`, { lastEventId: last, signal: this.abort.signal })) {
          if (ev.event === "done") {
            this.done = JSON.parse(ev.data);
            this.el.dataset.done = "true";
            if (this.onDone) this.onDone(this.done);
            return;
          }
          if (ev.event !== "message") continue;
          const line = JSON.parse(ev.data);
          this.add([line]);
          last = line.sequence;
          this.queueRender();
        }
      } catch (err) {
        if (this.stopped) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** Keeps lines; forgets colours computed past a gap they fill; drops the
   *  lines farthest from the view beyond KEEP. */
  add(records) {
    let last = 0;
    for (const r of records) {
      this.lines.set(r.sequence, { line: r.line, stream: r.stream, timestamp: r.timestamp, end: null });
      if (r.sequence > this.total) this.total = r.sequence;
      last = r.sequence;
    }
    for (let s = last + 1; this.lines.get(s)?.end; s++) this.lines.get(s).end = null;
    if (this.lines.size > KEEP * 1.2) {
      const center = this.follow ? this.total : this.geometry().first;
      for (const seq of this.lines.keys()) {
        if (Math.abs(seq - center) > KEEP / 2) this.lines.delete(seq);
      }
    }
  }

  atBottom() {
    const v = this.viewport;
    return v.scrollTop + v.clientHeight >= v.scrollHeight - 2;
  }

  geometry() {
    const vpH = this.viewport.clientHeight || 400;
    const fullPx = this.total * LINE_PX;
    const spacerPx = Math.min(fullPx, MAX_SCROLL_PX);
    const fit = Math.max(1, Math.floor(vpH / LINE_PX));
    const st = this.viewport.scrollTop;
    let first;
    let top;
    if (fullPx <= MAX_SCROLL_PX) {
      first = Math.floor(st / LINE_PX) + 1;
      top = (first - 1) * LINE_PX;
    } else {
      const maxSt = Math.max(1, spacerPx - vpH);
      first = 1 + Math.round(Math.min(1, st / maxSt) * Math.max(0, this.total - fit));
      top = st;
    }
    return { vpH, fullPx, spacerPx, fit, first, top, count: fit + 2 };
  }

  /** Scrolls so that `seq` is a third down the view. */
  scrollTo(seq) {
    const g = this.geometry();
    const first = Math.max(1, seq - Math.floor(g.fit / 3));
    if (g.fullPx <= MAX_SCROLL_PX) {
      this.viewport.scrollTop = (first - 1) * LINE_PX;
    } else {
      const maxSt = Math.max(1, g.spacerPx - g.vpH);
      this.viewport.scrollTop = ((first - 1) / Math.max(1, this.total - g.fit)) * maxSt;
    }
    for (const row of this.rows) row.key = null;
    this.render();
  }

  applyHash() {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (!m) return;
    this.highlight = Number(m[1]);
    this.follow = false;
    this.followBox.checked = false;
    // A click on a line number in view marks it without moving the view.
    const g = this.geometry();
    if (this.highlight >= g.first && this.highlight < g.first + g.fit) this.queueRender(true);
    else this.scrollTo(this.highlight);
  }

  queueRender(reset) {
    if (reset) for (const row of this.rows) row.key = null;
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => this.render());
  }

  /** The style line `seq` starts with: the end style of the line before,
   *  computed back to STYLE_WALK lines or the first line not in memory. */
  styleAt(seq) {
    const chain = [];
    let style = PLAIN;
    for (let k = seq - 1; k >= 1 && chain.length < STYLE_WALK; k--) {
      const l = this.lines.get(k);
      if (!l) break;
      if (l.end) { style = l.end; break; }
      chain.push(l);
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      style = endStyle(chain[i].line, style);
      chain[i].end = style;
    }
    return style;
  }

  render() {
    this.queued = false;
    if (this.stopped) return;
    this.spacer.style.height = `${Math.min(this.total * LINE_PX, MAX_SCROLL_PX)}px`;
    if (this.follow && !this.atBottom()) this.viewport.scrollTop = this.viewport.scrollHeight;
    const g = this.geometry();
    this.rowsEl.style.transform = `translateY(${g.top}px)`;
    while (this.rows.length < g.count) {
      const row = h("div", { class: "line" });
      this.rows.push(row);
      this.rowsEl.appendChild(row);
    }
    let missing = null;
    const current = this.matchAt >= 0 ? this.matches[this.matchAt] : null;
    for (let k = 0; k < this.rows.length; k++) {
      const row = this.rows[k];
      const seq = g.first + k;
      if (k >= g.count || seq > this.total) {
        row.hidden = true;
        row.key = null;
        continue;
      }
      row.hidden = false;
      const line = this.lines.get(seq);
      if (!line && missing === null) missing = seq;
      const key = `${seq}|${line ? 1 : 0}|${this.timestamps}|${this.highlight === seq}|${current === seq}|${this.query}`;
      if (row.key === key) continue;
      row.key = key;
      this.fillRow(row, seq, line, current);
    }
    this.info.textContent = `${this.total.toLocaleString("en")} lines`;
    this.viewport.dataset.total = String(this.total);
    this.viewport.dataset.first = String(g.first);
    this.viewport.dataset.held = String(this.lines.size);
    if (missing !== null) this.fetchFrom(missing);
    const last = g.first + g.count - 1;
    if (!this.tailShown && this.total > 0 && last >= this.total && this.lines.has(this.total)) {
      this.tailShown = true;
      performance.mark("hodei:log-tail-visible");
    }
  }

  fillRow(row, seq, line, current) {
    let cls = "line";
    if (line && line.stream === "stderr") cls += " stderr";
    if (this.highlight === seq) cls += " hl";
    if (this.matchSet.has(seq)) cls += seq === current ? " match current" : " match";
    row.className = cls;
    row.dataset.seq = String(seq);
    const number = h("a", { class: "ln", href: `#L${seq}`, text: seq });
    if (!line) {
      fill(row, number, h("span", { class: "loading", text: "…" }));
      return;
    }
    const text = h("span", { class: "text" });
    for (const seg of renderLine(line.line, this.styleAt(seq)).segments) {
      const span = document.createElement("span");
      styleSpan(span, seg.style);
      this.putText(span, seg.text);
      text.appendChild(span);
    }
    fill(row, number, this.timestamps ? h("span", { class: "ts", text: line.timestamp.slice(11, 23) }) : null, text);
  }

  /** Text into a span, with the search term marked (as text nodes). */
  putText(span, text) {
    const q = this.query;
    if (!q || !text.includes(q)) {
      span.textContent = text;
      return;
    }
    let at = 0;
    for (let i = text.indexOf(q); i >= 0; i = text.indexOf(q, at)) {
      if (i > at) span.appendChild(document.createTextNode(text.slice(at, i)));
      span.appendChild(h("mark", { text: q }));
      at = i + q.length;
    }
    if (at < text.length) span.appendChild(document.createTextNode(text.slice(at)));
  }

  /** Fetches a page of lines around `seq` (one request at a time). */
  async fetchFrom(seq) {
    if (this.fetching) return;
    this.fetching = true;
    try {
      const after = Math.max(0, seq - 1 - PAGE / 4);
      const page = await api(`${this.base}/page?after=${after}&limit=${PAGE}`, { signal: this.abort.signal });
      this.add(page.lines);
      this.total = Math.max(this.total, page.head);
      this.fetching = false;
      this.queueRender(true);
    } catch (err) {
      if (this.stopped) return;
      setTimeout(() => { this.fetching = false; this.queueRender(); }, 1000);
    }
  }

  /** Asks the host for every line containing `q`. */
  async search(q) {
    this.query = q;
    this.matches = [];
    this.matchSet = new Set();
    this.matchAt = -1;
    delete this.count.dataset.count;
    if (!q) {
      this.count.textContent = "";
      this.queueRender(true);
      return;
    }
    this.count.textContent = "searching…";
    const started = performance.now();
    const result = await api(`${this.base}/search?q=${encodeURIComponent(q)}`, { signal: this.abort.signal });
    if (q !== this.query) return;
    this.matches = result.matches;
    this.matchSet = new Set(result.matches);
    this.count.dataset.ms = String(Math.round(performance.now() - started));
    this.count.dataset.count = String(result.count);
    this.count.textContent = `${result.count.toLocaleString("en")} matches`;
    if (this.matches.length) {
      const from = this.geometry().first;
      const i = this.matches.findIndex((s) => s >= from);
      this.goto(i < 0 ? 0 : i);
    } else {
      this.queueRender(true);
    }
  }

  step(delta) {
    if (!this.matches.length) return;
    const n = this.matches.length;
    this.goto((((this.matchAt + delta) % n) + n) % n);
  }

  goto(i) {
    this.matchAt = i;
    this.follow = false;
    this.followBox.checked = false;
    this.count.textContent = `${(i + 1).toLocaleString("en")} / ${this.matches.length.toLocaleString("en")} matches`;
    this.scrollTo(this.matches[i]);
  }

  /** With a token, a plain link cannot send it: fetch, then save the blob. */
  async download(event) {
    if (!token()) return;
    event.preventDefault();
    const res = await api(`${this.base}/raw`, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: `job-${this.jobId}.log` });
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
