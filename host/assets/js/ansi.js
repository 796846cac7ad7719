// ANSI escape sequences of a log line, rendered as a terminal would:
// SGR (colours, bold, italic, underline, inverse, strike) carried from line
// to line, `\r` returning to column 0 so that progress lines overwrite
// themselves, `ESC[K` erasing, backspace and tabs. Other sequences (OSC
// titles and hyperlinks, cursor movement across lines) are dropped: the
// output is text, never markup.

/** The style at the start of a log. */
export const PLAIN = Object.freeze({ fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false, strike: false });

const CUBE = [0, 95, 135, 175, 215, 255];

/** CSS colour of a 256-colour index above 15 (0–15 are classes, themed). */
function color256(n) {
  if (n < 232) {
    n -= 16;
    return `rgb(${CUBE[Math.floor(n / 36)]}, ${CUBE[Math.floor(n / 6) % 6]}, ${CUBE[n % 6]})`;
  }
  const v = 8 + (n - 232) * 10;
  return `rgb(${v}, ${v}, ${v})`;
}

/** Applies one SGR parameter list to a style; answers a new style (or the
 *  same object when nothing changed, so equal runs compare by identity). */
export function applySgr(style, params) {
  const p = params.length ? params : [0];
  let s = { ...style };
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) s = { ...PLAIN };
    else if (n === 1) s.bold = true;
    else if (n === 2) s.dim = true;
    else if (n === 3) s.italic = true;
    else if (n === 4) s.underline = true;
    else if (n === 7) s.inverse = true;
    else if (n === 9) s.strike = true;
    else if (n === 22) { s.bold = false; s.dim = false; }
    else if (n === 23) s.italic = false;
    else if (n === 24) s.underline = false;
    else if (n === 27) s.inverse = false;
    else if (n === 29) s.strike = false;
    else if (n >= 30 && n <= 37) s.fg = n - 30;
    else if (n >= 90 && n <= 97) s.fg = n - 90 + 8;
    else if (n === 39) s.fg = null;
    else if (n >= 40 && n <= 47) s.bg = n - 40;
    else if (n >= 100 && n <= 107) s.bg = n - 100 + 8;
    else if (n === 49) s.bg = null;
    else if (n === 38 || n === 48) {
      let c = null;
      if (p[i + 1] === 5 && p[i + 2] !== undefined) {
        c = p[i + 2] & 255;
        i += 2;
      } else if (p[i + 1] === 2 && p[i + 4] !== undefined) {
        c = `rgb(${p[i + 2] & 255}, ${p[i + 3] & 255}, ${p[i + 4] & 255})`;
        i += 4;
      } else {
        break;
      }
      if (n === 38) s.fg = c; else s.bg = c;
    }
  }
  const keys = Object.keys(PLAIN);
  if (keys.every((k) => s[k] === style[k])) return style;
  if (keys.every((k) => s[k] === PLAIN[k])) return PLAIN;
  return s;
}

/** Reads a CSI sequence starting at `i` (just after `ESC[`): its numeric
 *  parameters, final byte and the index after it. */
function readCsi(text, i) {
  let j = i;
  while (j < text.length) {
    const c = text.charCodeAt(j);
    if (c >= 0x40 && c <= 0x7e) break;
    j++;
  }
  const params = text.slice(i, j).replace(/:/g, ";").split(";").filter((x, k, a) => x !== "" || a.length > 1).map((x) => (x === "" ? 0 : parseInt(x, 10) || 0));
  return { params, final: text[j] || "", next: j + 1 };
}

/** Index after an OSC (`ESC]`…BEL or `ESC\`) starting at `i`. */
function skipOsc(text, i) {
  for (let j = i; j < text.length; j++) {
    if (text[j] === "\x07") return j + 1;
    if (text[j] === "\x1b" && text[j + 1] === "\\") return j + 2;
  }
  return text.length;
}

/** The style after a line, from the style before it: only SGR matters, so
 *  a line without ESC costs one indexOf. */
export function endStyle(text, style) {
  let i = text.indexOf("\x1b[");
  while (i >= 0) {
    const csi = readCsi(text, i + 2);
    if (csi.final === "m") style = applySgr(style, csi.params);
    i = text.indexOf("\x1b[", csi.next);
  }
  return style;
}

/** Renders a line: `{segments: [{text, style}], end}`, with `\r`, `\b`,
 *  tabs and `ESC[K` applied to a row of cells as a terminal would. */
export function renderLine(text, style) {
  if (text.indexOf("\x1b") < 0 && text.indexOf("\r") < 0 && text.indexOf("\b") < 0 && text.indexOf("\t") < 0) {
    return { segments: text ? [{ text: stripControls(text), style }] : [], end: style };
  }
  const chars = [];
  const styles = [];
  let col = 0;
  const put = (ch) => {
    while (chars.length < col) { chars.push(" "); styles.push(style); }
    chars[col] = ch;
    styles[col] = style;
    col++;
  };
  for (let i = 0; i < text.length;) {
    const ch = text[i];
    if (ch === "\x1b") {
      const kind = text[i + 1];
      if (kind === "[") {
        const csi = readCsi(text, i + 2);
        if (csi.final === "m") style = applySgr(style, csi.params);
        else if (csi.final === "K") {
          const mode = csi.params[0] || 0;
          if (mode === 0) { chars.length = Math.min(chars.length, col); styles.length = chars.length; }
          else if (mode === 2) { chars.length = 0; styles.length = 0; }
        } else if (csi.final === "G") col = Math.max(0, (csi.params[0] || 1) - 1);
        else if (csi.final === "C") col += csi.params[0] || 1;
        else if (csi.final === "D") col = Math.max(0, col - (csi.params[0] || 1));
        i = csi.next;
      } else if (kind === "]") {
        i = skipOsc(text, i + 2);
      } else {
        i += 2;
      }
    } else if (ch === "\r") { col = 0; i++; }
    else if (ch === "\b") { col = Math.max(0, col - 1); i++; }
    else if (ch === "\t") { do put(" "); while (col % 8 !== 0); i++; }
    else {
      const code = ch.charCodeAt(0);
      if (code >= 0x20 && code !== 0x7f) put(ch);
      i++;
    }
  }
  const segments = [];
  for (let k = 0; k < chars.length; k++) {
    const last = segments[segments.length - 1];
    if (last && last.style === styles[k]) last.text += chars[k];
    else segments.push({ text: chars[k], style: styles[k] });
  }
  return { segments, end: style };
}

function stripControls(text) {
  // eslint-disable-next-line no-control-regex
  return /[\x00-\x1f\x7f]/.test(text) ? text.replace(/[\x00-\x1f\x7f]/g, "") : text;
}

/** Puts a style on a span: classes for the 16 themed colours and the
 *  attributes, CSSOM properties (not markup) for 256 and true colours. */
export function styleSpan(span, style) {
  if (style === PLAIN) return;
  let { fg, bg } = style;
  const classes = [];
  if (style.inverse) {
    [fg, bg] = [bg, fg];
    if (fg === null) classes.push("a-fg-inv");
    if (bg === null) classes.push("a-bg-inv");
  }
  if (typeof fg === "number" && fg < 16) classes.push(`a-fg-${fg}`);
  else if (typeof fg === "number") span.style.color = color256(fg);
  else if (typeof fg === "string") span.style.color = fg;
  if (typeof bg === "number" && bg < 16) classes.push(`a-bg-${bg}`);
  else if (typeof bg === "number") span.style.backgroundColor = color256(bg);
  else if (typeof bg === "string") span.style.backgroundColor = bg;
  if (style.bold) classes.push("a-b");
  if (style.dim) classes.push("a-d");
  if (style.italic) classes.push("a-i");
  if (style.underline) classes.push("a-u");
  if (style.strike) classes.push("a-s");
  if (classes.length) span.className = classes.join(" ");
}
