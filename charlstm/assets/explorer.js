"use strict";
// charlstm explorer: colours the text by one unit's activation and draws a layer as a heatmap.
// Data: one JSON block (see charlstm/explorer.py); every (signal, layer) is a deflated block of
// uint8 levels [time][unit] with a per-unit lo/hi, inflated on first use.
(function () {
  const errorBox = document.getElementById("errors");
  function report(message) { errorBox.textContent += message + "\n"; }
  window.onerror = function (message, source, line) { report(message + " (line " + line + ")"); };
  window.addEventListener("unhandledrejection", function (ev) {
    report("error: " + ((ev.reason && (ev.reason.stack || ev.reason.message)) || ev.reason));
  });

  const D = JSON.parse(document.getElementById("data").textContent);
  const chars = Array.from(D.text); // code points, as Python counts them
  const T = chars.length, H = D.model.hidden, L = D.model.layers;
  const GATES = new Set(D.gates), BOUNDED = new Set(D.bounded);
  const $ = (id) => document.getElementById(id);
  const sel = { layer: D.initial.layer, neuron: D.initial.neuron, signal: D.initial.signal, mode: "neuron" };
  // The model's surprise at each character (bits, top 5) and, where computed, an ablation's effect.
  const S = D.surprise || null, ABL = S && S.ablation ? S.ablation : null;

  // ----- colours (the same scales as the terminal view, charlstm/render.py) -----
  const NEUTRAL = [247, 247, 247], RED = [178, 24, 43], BLUE = [33, 102, 172];
  const GATE_LOW = [247, 251, 255], GATE_HIGH = [8, 48, 107];
  function mix(a, b, t) { return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t].map(Math.round); }
  function colour(v, signal, scale) {
    if (!isFinite(v)) return NEUTRAL;
    if (GATES.has(signal)) return mix(GATE_LOW, GATE_HIGH, Math.min(Math.max(v, 0), 1));
    return mix(NEUTRAL, v < 0 ? RED : BLUE, Math.min(Math.abs(v) / (scale || 1), 1));
  }
  function ink(c) { return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 140 ? "0,0,0" : "255,255,255"; }
  // Value shown at full colour: 1 for gates and tanh outputs; the unit's largest |value| for the cell.
  function scaleOf(signal, layer, n) {
    if (GATES.has(signal) || BOUNDED.has(signal)) return 1;
    const b = D.acts[signal][layer - 1];
    return Math.max(Math.abs(b.lo[n]), Math.abs(b.hi[n])) || 1;
  }
  function fmt(v) { return (v >= 0 ? "+" : "") + v.toFixed(3); }
  const MAX_BITS = 10, WHITE = [255, 255, 255], SURPRISED = [203, 24, 29]; // as charlstm/surprise.py
  function bitsColour(b) { return mix(WHITE, SURPRISED, Math.min(Math.max(b, 0) / MAX_BITS, 1)); }
  // ablation Δ: red costlier, blue cheaper (a loop: Math.max(...delta) overflows the stack on a long text)
  const ABL_SCALE = ABL ? ABL.delta.reduce(function (m, d) { return Math.max(m, Math.abs(d)); }, 0.5) : 1;
  function deltaColour(d) { return mix(NEUTRAL, d > 0 ? RED : BLUE, Math.min(Math.abs(d) / ABL_SCALE, 1)); }

  // ----- data blocks -----
  const cache = new Map();
  async function inflate(b64) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function block(signal, layer) { // Promise of Float32Array [T * H], time-major
    const key = signal + "/" + layer;
    if (!cache.has(key)) {
      const b = D.acts[signal][layer - 1];
      cache.set(key, inflate(b.q).then(function (q) {
        if (q.length !== T * H) throw new Error("corrupt block " + key + ": " + q.length + " values, expected " + T * H);
        const v = new Float32Array(q.length);
        for (let t = 0; t < T; t++) for (let n = 0; n < H; n++) {
          const i = t * H + n;
          v[i] = b.lo[n] + q[i] * (b.hi[n] - b.lo[n]) / 255;
        }
        return v;
      }));
    }
    return cache.get(key);
  }

  // ----- page furniture -----
  $("model").textContent = D.model.kind.toUpperCase() + ", " + L + " layers × " + H + " units" +
    (D.model.step != null ? ", step " + D.model.step : "") + " — " + D.model.path + " — " + T + " characters of " + D.source;
  for (let k = 1; k <= L; k++) $("layer").add(new Option(String(k), String(k)));
  for (const s of D.signals) $("signal").add(new Option(s, s));
  $("neuron").max = String(H - 1);
  if (!S) $("mode").disabled = true;
  if (ABL) $("mode").add(new Option("ablating " + ABL.units.map(function (u) { return u[0] + ":" + u[1]; }).join(", ") + " (Δ bits)", "ablation"));

  const MARK = { " ": "·", "\t": "→", "\n": "↵", "\x1c": "␜", "\r": "␍" };
  const spans = [];
  const frag = document.createDocumentFragment();
  chars.forEach(function (ch, i) {
    const s = document.createElement("span");
    s.dataset.i = String(i);
    if (ch in MARK) { s.textContent = MARK[ch]; s.dataset.ws = "1"; }
    else s.textContent = /\p{Cc}/u.test(ch) ? "?" : ch;
    frag.append(s);
    if (ch === "\n") frag.append("\n");
    spans.push(s);
  });
  $("text").append(frag);

  // Line and column of each character, for the hover line.
  const lineOf = new Int32Array(T), colOf = new Int32Array(T);
  for (let i = 0, line = 1, col = 0; i < T; i++) {
    lineOf[i] = line; colOf[i] = col;
    if (chars[i] === "\n" || chars[i] === "\x1c") { line++; col = 0; } else col++;
  }

  const topList = $("toplist");
  for (const feature of Object.keys(D.top)) {
    const h = document.createElement("h3");
    h.textContent = feature;
    topList.append(h);
    for (const u of D.top[feature]) {
      const a = document.createElement("a");
      a.href = "#";
      a.dataset.layer = u.layer; a.dataset.neuron = u.neuron; a.dataset.signal = u.signal;
      const score = document.createElement("span");
      score.className = u.score < 0 ? "neg" : "pos";
      score.textContent = fmt(u.score);
      a.append("layer " + u.layer + " · " + u.neuron + " · " + u.signal + " ", score);
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        select({ layer: u.layer, neuron: u.neuron, signal: u.signal });
      });
      topList.append(a);
    }
  }

  function drawLegend() {
    if (sel.mode !== "neuron") {
      const leg = $("legend"), bar = document.createElement("span");
      leg.textContent = "";
      bar.className = "bar";
      if (sel.mode === "surprise") {
        bar.style.background = "linear-gradient(to right,rgb(" + bitsColour(0) + "),rgb(" + bitsColour(MAX_BITS) + "))";
        leg.append("bits 0 ", bar, " ≥" + MAX_BITS + " (" + S.bits.length + " characters, " +
          (S.bits.reduce(function (a, b) { return a + b; }, 0) / Math.max(S.bits.length, 1)).toFixed(3) + " bits per character)");
      } else {
        bar.style.background = "linear-gradient(to right,rgb(" + deltaColour(-ABL_SCALE) + "),rgb(" + NEUTRAL + "),rgb(" + deltaColour(ABL_SCALE) + "))";
        leg.append("Δ bits " + fmt(-ABL_SCALE) + " ", bar, " " + fmt(ABL_SCALE) + " (bits per character " +
          ABL.bpc.toFixed(3) + " → " + ABL.bpc_ablated.toFixed(3) + " ablated)");
      }
      return;
    }
    const s = sel.signal, scale = scaleOf(s, sel.layer, sel.neuron);
    const low = GATES.has(s) ? 0 : -scale, high = GATES.has(s) ? 1 : scale;
    const stops = [0, 0.25, 0.5, 0.75, 1].map(function (f) { return "rgb(" + colour(low + (high - low) * f, s, scale) + ")"; });
    const leg = $("legend");
    leg.textContent = "";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.background = "linear-gradient(to right," + stops.join(",") + ")";
    leg.append(s + (GATES.has(s) ? " closed " : " ") + (GATES.has(s) ? "0" : fmt(low)) + " ", bar,
      " " + (GATES.has(s) ? "1 open" : fmt(high)) + (s === "cell" ? " (this unit's largest |value|)" : ""));
  }

  async function drawText() {
    const v = await block(sel.signal, sel.layer);
    const scale = scaleOf(sel.signal, sel.layer, sel.neuron);
    for (let t = 0; t < T; t++) {
      const c = sel.mode === "surprise" ? bitsColour(S.bits[t]) : sel.mode === "ablation" ? deltaColour(ABL.delta[t])
        : colour(v[t * H + sel.neuron], sel.signal, scale);
      spans[t].style.background = "rgb(" + c + ")";
      spans[t].style.color = "rgba(" + ink(c) + "," + (spans[t].dataset.ws ? 0.45 : 1) + ")";
    }
    drawLegend();
  }

  // ----- network view: units × characters for one signal and layer -----
  const canvas = $("heatmap"), ctx = canvas.getContext("2d");
  const COL_W = Math.max(1, Math.min(3, Math.floor(30000 / Math.max(T, 1))));
  const ROW_H = Math.max(1, Math.min(6, Math.floor(600 / H)));
  let bitmap = null, hoverT = -1;
  async function drawNetwork() {
    const v = await block(sel.signal, sel.layer);
    const off = document.createElement("canvas");
    off.width = T; off.height = H;
    const img = off.getContext("2d").createImageData(T, H);
    for (let n = 0; n < H; n++) {
      const scale = scaleOf(sel.signal, sel.layer, n); // each row on its own unit's scale
      for (let t = 0; t < T; t++) {
        const c = colour(v[t * H + n], sel.signal, scale), p = (n * T + t) * 4;
        img.data[p] = c[0]; img.data[p + 1] = c[1]; img.data[p + 2] = c[2]; img.data[p + 3] = 255;
      }
    }
    off.getContext("2d").putImageData(img, 0, 0);
    bitmap = off;
    $("nettitle").textContent = "network view: layer " + sel.layer + ", " + sel.signal + " of all " + H + " neurons";
    $("netnote").textContent = "rows: neurons 0–" + (H - 1) + " top to bottom; columns: the " + T +
      " characters; click a row to show that neuron" + (sel.signal === "cell" ? "; each row scaled by its largest |value|" : "");
    paintNetwork();
  }
  function paintNetwork() {
    if (!bitmap) return;
    if (canvas.width !== T * COL_W) canvas.width = T * COL_W;
    if (canvas.height !== H * ROW_H) canvas.height = H * ROW_H;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, T * COL_W, H * ROW_H);
    ctx.strokeStyle = "#f90";
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, sel.neuron * ROW_H - 0.5, T * COL_W - 1, ROW_H + 1);
    if (hoverT >= 0) ctx.strokeRect(hoverT * COL_W - 0.5, 0.5, COL_W + 1, H * ROW_H - 1);
  }

  // ----- hovering and selecting -----
  function describeChar(t) {
    const ch = chars[t];
    return JSON.stringify(ch) + " #" + t + " (line " + lineOf[t] + ", col " + colOf[t] + ")";
  }
  let lit = null;
  function highlight(t) {
    if (lit) lit.classList.remove("hl");
    lit = t >= 0 ? spans[t] : null;
    if (lit) lit.classList.add("hl");
    hoverT = t;
    paintNetwork();
  }
  $("text").addEventListener("mouseover", async function (ev) {
    const t = ev.target.dataset ? Number(ev.target.dataset.i) : NaN;
    if (!Number.isInteger(t)) return;
    highlight(t);
    const parts = [];
    for (const s of D.signals) {
      const v = await block(s, sel.layer);
      parts.push(s + " " + fmt(v[t * H + sel.neuron]));
    }
    $("hover").textContent = describeChar(t) + " │ layer " + sel.layer + ", neuron " + sel.neuron + ": " + parts.join("  ") + surpriseOf(t);
  });
  const SHOWN = { " ": "␣", "\n": "↵", "\t": "→", "\x1c": "␜" };
  function surpriseOf(t) {
    if (!S) return "";
    const guesses = S.top[t].map(function (g) { return (SHOWN[g[0]] || g[0]) + " " + Math.round(100 * g[1]) + "%"; });
    return " │ " + S.bits[t].toFixed(2) + " bits (expected " + guesses.join(", ") + ")" +
      (ABL ? "; ablated " + fmt(ABL.delta[t]) + " bits" : "");
  }
  canvas.addEventListener("mousemove", async function (ev) {
    const r = canvas.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left) / COL_W), n = Math.floor((ev.clientY - r.top) / ROW_H);
    if (t < 0 || t >= T || n < 0 || n >= H) return;
    const v = await block(sel.signal, sel.layer);
    $("hover").textContent = describeChar(t) + " │ layer " + sel.layer + ", neuron " + n + ", " + sel.signal + " " + fmt(v[t * H + n]);
    highlight(t);
  });
  canvas.addEventListener("click", function (ev) {
    const r = canvas.getBoundingClientRect();
    const n = Math.floor((ev.clientY - r.top) / ROW_H);
    if (n >= 0 && n < H) select({ neuron: n });
  });

  async function select(change) {
    const before = sel.layer + "/" + sel.signal;
    if (!("mode" in change) && Object.keys(change).length) sel.mode = "neuron"; // picking a unit shows it
    Object.assign(sel, change);
    sel.neuron = Math.max(0, Math.min(H - 1, Math.floor(Number(sel.neuron)) || 0));
    $("layer").value = String(sel.layer);
    $("signal").value = sel.signal;
    $("mode").value = sel.mode;
    $("neuron").value = String(sel.neuron);
    for (const a of topList.querySelectorAll("a")) {
      a.classList.toggle("current", Number(a.dataset.layer) === sel.layer && Number(a.dataset.neuron) === sel.neuron && a.dataset.signal === sel.signal);
    }
    await drawText();
    if (before !== sel.layer + "/" + sel.signal || !bitmap) await drawNetwork(); else paintNetwork();
  }
  $("layer").addEventListener("change", function () { select({ layer: Number(this.value) }); });
  $("signal").addEventListener("change", function () { select({ signal: this.value }); });
  $("mode").addEventListener("change", function () { select({ mode: this.value }); });
  $("neuron").addEventListener("change", function () { select({ neuron: this.value }); });
  $("prev").addEventListener("click", function () { select({ neuron: sel.neuron - 1 }); });
  $("next").addEventListener("click", function () { select({ neuron: sel.neuron + 1 }); });

  select({}).then(function () {
    document.body.dataset.ready = "1"; // for headless checks: the page drew without errors
  }).catch(function (e) { report("error: " + (e.stack || e)); });
})();
