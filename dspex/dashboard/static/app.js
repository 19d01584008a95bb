// dspex dashboard: renders the snapshots the server pushes over /api/events.
// No framework and no build step: each section is rebuilt from its slice of the
// snapshot when that slice changed. Every value from the server goes into the
// page as text (never as HTML), so a run id or an error message cannot inject markup.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHART_HEIGHT = 260;
  const TRIAL_ROWS = 200; // the table shows the newest ones; the chart shows all
  const KIND_CLASSES = ["k0", "k1", "k2", "k3"];

  const state = {
    snapshot: null,
    chosen: runFromHash(), // the run the user clicked; null follows the newest running run
    source: null,
    drawn: new Map(), // section -> JSON of the data it was last drawn from
  };

  // --- small DOM helpers ------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
  }

  function $(id) {
    return document.getElementById(id);
  }

  function fill(id, ...children) {
    $(id).replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  function empty(title, ...lines) {
    return el("div", { class: "empty" }, el("strong", { text: title }), ...lines.map((l) => el("p", {}, l)));
  }

  function code(text) {
    return el("code", { text });
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || ""}`, text });
  }

  function table(headers, rows, options) {
    const head = el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : "", text: h.label })));
    return el("table", { class: (options && options.class) || "" }, el("thead", {}, head), el("tbody", {}, rows));
  }

  function cell(value, num) {
    return el("td", { class: num ? "num" : "" }, value);
  }

  // --- formatting ---------------------------------------------------------------

  function fmtScore(value) {
    if (value === null || value === undefined) return "—";
    return Math.abs(value) <= 1 ? value.toFixed(3) : value.toFixed(1);
  }

  function fmtInt(value) {
    return value === null || value === undefined ? "—" : Math.round(value).toLocaleString("en-US");
  }

  function fmtCompact(value) {
    if (value === null || value === undefined) return "—";
    if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
    if (value >= 1e4) return `${Math.round(value / 1e3)}k`;
    return fmtInt(value);
  }

  function fmtCost(value) {
    if (value === null || value === undefined) return "—";
    if (value === 0) return "$0";
    return value < 0.01 ? `$${value.toFixed(4)}` : `$${value.toFixed(2)}`;
  }

  function fmtAgo(seconds) {
    const delta = Math.max(0, Date.now() / 1000 - seconds);
    if (delta < 5) return "just now";
    if (delta < 60) return `${Math.floor(delta)} s ago`;
    if (delta < 3600) return `${Math.floor(delta / 60)} min ago`;
    if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`;
    return `${Math.floor(delta / 86400)} d ago`;
  }

  function fmtClock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  function fmtDuration(seconds) {
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  // A live "12 s ago": re-read every second by tickClocks().
  function ago(seconds) {
    return el("span", { class: "ago", "data-t": seconds, title: new Date(seconds * 1000).toLocaleString(), text: fmtAgo(seconds) });
  }

  function tickClocks() {
    for (const node of document.querySelectorAll(".ago[data-t]")) {
      node.textContent = fmtAgo(Number(node.dataset.t));
    }
  }

  const STATUS_KINDS = {
    running: "info", finished: "ok", scored: "ok", closed: "ok",
    failed: "bad", open: "bad", unreachable: "bad",
    budget_limited: "warn", half_open: "warn", cancelled: "mute",
  };

  function status(value) {
    return badge(String(value).replace(/_/g, " "), `status ${STATUS_KINDS[value] || "mute"}`);
  }

  // --- connection ---------------------------------------------------------------

  function runFromHash() {
    const match = /(?:^#|&)run=([^&]+)/.exec(window.location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function connect() {
    if (state.source) state.source.close();
    const query = state.chosen ? `?run=${encodeURIComponent(state.chosen)}` : "";
    const source = new EventSource(`/api/events${query}`);
    source.addEventListener("snapshot", (event) => apply(JSON.parse(event.data)));
    source.onopen = () => setConnection("live", "live");
    source.onerror = () => setConnection("warn", "reconnecting…"); // EventSource retries by itself
    state.source = source;
  }

  function setConnection(kind, text) {
    $("conn-pill").className = `pill ${kind}`;
    $("conn-text").textContent = text;
  }

  function choose(runId) {
    if (runId === state.chosen) return;
    state.chosen = runId;
    window.history.replaceState(null, "", `#run=${encodeURIComponent(runId)}`);
    connect();
  }

  // --- rendering ------------------------------------------------------------------

  function apply(snapshot) {
    state.snapshot = snapshot;
    const runtime = snapshot.runtime;
    section("header", [runtime.connected, runtime.address, runtime.message, snapshot.store], renderHeader);
    section("runs", [snapshot.runs, snapshot.selected, snapshot.store, snapshot.read_error], renderRuns);
    section("run", snapshot.run, renderRun);
    section("evaluations", [runtime.connected, runtime.message, runtime.evaluations], renderEvaluations);
    section("pools", [runtime.connected, runtime.message, runtime.pools, runtime.errors.pools], renderPools);
    section("tree", [runtime.connected, runtime.message, runtime.tree, runtime.errors.tree], renderTree);
    section("dead", [runtime.connected, runtime.message, runtime.dead_letters, runtime.errors.dead_letters], renderDeadLetters);
    section("events", [runtime.connected, runtime.message, runtime.events, runtime.lm_requests], renderEvents);
  }

  // Redraw a section only when its data changed, so hovering and scrolling survive pushes.
  function section(name, data, render) {
    const key = JSON.stringify(data === undefined ? null : data);
    if (state.drawn.get(name) === key) return;
    state.drawn.set(name, key);
    render(state.snapshot);
  }

  function renderHeader(snapshot) {
    const runtime = snapshot.runtime;
    const pill = $("runtime-pill");
    pill.className = `pill ${runtime.connected ? "live" : connecting(runtime) ? "warn" : "mute"}`;
    pill.textContent = runtime.connected ? `runtime: ${runtime.address || "this process"}`
      : connecting(runtime) ? "runtime: connecting…" : "runtime not connected";
    pill.title = runtime.message;
    $("store-path").textContent = `store: ${snapshot.store.path}`;
  }

  function renderRuns(snapshot) {
    if (snapshot.store.error || snapshot.read_error) {
      fill("runs", empty("Cannot read the run store", snapshot.store.error || snapshot.read_error));
      return;
    }
    if (!snapshot.runs.length) {
      fill("runs", empty(
        "No runs yet",
        ["Run ", code("dspex demo"), " (or compile any optimizer) and its runs appear here as they go."],
        ["Reading ", code(snapshot.store.path), "; pass ", code("--db"), " or set ", code("DSPEX_RUNS_DB"), " to read another store."],
      ));
      return;
    }
    const headers = [
      { label: "Run" }, { label: "Optimizer" }, { label: "Status" }, { label: "Best score", num: true },
      { label: "Trials", num: true }, { label: "LM calls", num: true }, { label: "Cost", num: true }, { label: "Updated" },
    ];
    const rows = snapshot.runs.map((run) => el("tr", {
      class: `clickable ${run.run_id === snapshot.selected ? "selected" : ""}`,
      "data-run": run.run_id,
      tabindex: "0",
      onclick: () => choose(run.run_id),
      onkeydown: (event) => { if (event.key === "Enter") choose(run.run_id); },
    },
    cell(el("span", { class: "mono", text: run.run_id })),
    cell(run.optimizer),
    cell(status(run.status)),
    cell(fmtScore(run.best_score), true),
    cell(run.failed_trials ? [fmtInt(run.trials), el("span", { class: "bad-text", text: ` (${run.failed_trials} failed)` })] : fmtInt(run.trials), true),
    cell(fmtInt(run.lm_calls), true),
    cell(fmtCost(run.cost), true),
    cell(ago(run.updated))));
    fill("runs", table(headers, rows, { class: "runs" }));
  }

  function renderRun(snapshot) {
    const run = snapshot.run;
    $("run-card").hidden = !run;
    if (!run) return;
    $("run-title").replaceChildren("Run ", el("span", { class: "mono", text: run.run_id }));
    fill("run-meta", run.optimizer, " · ", status(run.status));
    fill("run-error", run.error ? el("div", { class: "callout bad", text: run.error }) : null);
    renderStats(run);
    renderProgress(run);
    renderChart(run);
    renderTrials(run);
    renderUsage(run);
    renderConfig(run);
  }

  function renderStats(run) {
    const scored = run.trials.filter((t) => t.score !== null).length;
    const failed = run.trials.filter((t) => t.status === "failed").length;
    const calls = run.usage.reduce((sum, u) => sum + u.calls, 0);
    const costs = run.usage.map((u) => u.cost).filter((c) => c !== null);
    const last = run.trials.length ? run.trials[run.trials.length - 1].created : run.created;
    const tiles = [
      ["Best score", fmtScore(run.best_score)],
      ["Trials", failed ? `${fmtInt(scored)} + ${failed} failed` : fmtInt(scored)],
      ["LM calls", fmtInt(calls)],
      ["Cost", costs.length ? fmtCost(costs.reduce((a, b) => a + b, 0)) : "—"],
      [run.status === "running" ? "Elapsed" : "Took", fmtDuration(Math.max(0, last - run.created))],
    ];
    fill("run-stats", tiles.map(([label, value]) => el("div", { class: "stat" }, el("div", { class: "stat-label", text: label }), el("div", { class: "stat-value", text: value }))));
  }

  function progressBar(done, total, label) {
    const fraction = total ? Math.min(1, done / total) : 0;
    const bar = el("div", { class: "bar-fill" });
    bar.style.width = `${(fraction * 100).toFixed(1)}%`; // CSSOM, allowed by the page's CSP
    return el("div", { class: "progress" }, el("div", { class: "bar" }, bar), el("span", { class: "muted small", text: label }));
  }

  function renderProgress(run) {
    const total = run.planned_trials;
    if (!total) {
      fill("run-progress");
      return;
    }
    fill("run-progress", progressBar(run.trials_total, total, `${run.trials_total} of ${total} planned trials`));
  }

  function renderTrials(run) {
    const newest = run.trials.slice(-TRIAL_ROWS).reverse();
    $("trials-note").textContent = run.trials_total > newest.length ? `(newest ${newest.length} of ${run.trials_total})` : "";
    if (!newest.length) {
      fill("trials", empty("No trials yet", "Trials appear here as the optimizer scores them."));
      return;
    }
    const headers = [{ label: "#", num: true }, { label: "Kind" }, { label: "Score", num: true }, { label: "Status" }, { label: "At" }];
    const rows = newest.map((t) => el("tr", { title: t.error || t.params || "" },
      cell(t.number, true),
      cell(t.kind),
      cell(fmtScore(t.score), true),
      cell(t.error ? [status(t.status), el("div", { class: "bad-text small clip", text: t.error })] : status(t.status)),
      cell(el("span", { class: "muted", text: fmtClock(t.created) }))));
    fill("trials", table(headers, rows, { class: "compact" }));
  }

  function renderUsage(run) {
    if (!run.usage.length) {
      fill("usage", empty("No LM calls recorded yet", "Usage is stored per model as each step of the run finishes."));
      return;
    }
    const headers = [{ label: "Model" }, { label: "Calls", num: true }, { label: "Tokens in / out", num: true }, { label: "Cost", num: true }];
    const rows = run.usage.map((u) => el("tr", { title: `${fmtInt(u.prompt_tokens)} prompt and ${fmtInt(u.completion_tokens)} completion tokens` },
      cell(el("span", { class: "mono", text: u.model })), cell(fmtInt(u.calls), true),
      cell(`${fmtCompact(u.prompt_tokens)} / ${fmtCompact(u.completion_tokens)}`, true), cell(fmtCost(u.cost), true)));
    fill("usage", table(headers, rows, { class: "compact" }));
  }

  function renderConfig(run) {
    const entries = Object.entries(run.config);
    fill("config-body", entries.length
      ? el("dl", {}, entries.map(([key, value]) => [el("dt", { text: key }), el("dd", { class: "mono", text: value })]))
      : el("p", { class: "muted", text: "No configuration stored." }));
  }

  // --- the score chart ------------------------------------------------------------

  function niceDomain(values) {
    if (!values.length) return [0, 1];
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (lo >= 0 && hi <= 1) return [0, 1]; // fractions: keep the whole scale for honesty
    if (lo >= 0 && hi <= 100 && hi > 1) return [0, 100]; // percentages (Evaluate's default)
    if (lo === hi) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  function ticks(lo, hi, count) {
    const step = niceStep((hi - lo) / count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    out.step = step;
    return out;
  }

  // As many decimals as the tick step needs, the same for every label on the axis.
  function fmtTick(value, step) {
    return value.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  }

  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw || 1));
    const unit = raw / power;
    return power * (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10);
  }

  function kindClasses(trials) {
    const kinds = [...new Set(trials.map((t) => t.kind))];
    return new Map(kinds.map((kind, i) => [kind, KIND_CLASSES[i % KIND_CLASSES.length]]));
  }

  function renderChart(run) {
    const chart = $("score-chart");
    const width = Math.max(320, $("chart-wrap").clientWidth);
    chart.setAttribute("viewBox", `0 0 ${width} ${CHART_HEIGHT}`);
    chart.setAttribute("width", width);
    chart.setAttribute("height", CHART_HEIGHT);
    const trials = run.trials;
    const kinds = kindClasses(trials);
    chart.replaceChildren();
    chart.dataset.count = String(trials.filter((t) => t.score !== null || t.status === "failed").length);
    renderLegend(kinds, trials);
    if (!trials.length) {
      chart.append(svgText(width / 2, CHART_HEIGHT / 2, "No trials yet: scores appear here as the optimizer records them.", "chart-empty"));
      return;
    }
    const frame = chartFrame(trials, width);
    drawAxes(chart, frame);
    drawBest(chart, frame, trials);
    for (const trial of trials) drawPoint(chart, frame, trial, kinds.get(trial.kind));
  }

  function chartFrame(trials, width) {
    const margin = { left: 52, right: 18, top: 14, bottom: 34 };
    const numbers = trials.map((t) => t.number);
    let x0 = Math.min(...numbers);
    let x1 = Math.max(...numbers);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const [y0, y1] = niceDomain(trials.map((t) => t.score).filter((s) => s !== null));
    const plotW = width - margin.left - margin.right;
    const plotH = CHART_HEIGHT - margin.top - margin.bottom;
    return {
      margin, x0, x1, y0, y1, plotW, plotH,
      x: (v) => margin.left + ((v - x0) / (x1 - x0)) * plotW,
      y: (v) => margin.top + (1 - (v - y0) / (y1 - y0)) * plotH,
    };
  }

  function svgText(x, y, text, cls) {
    const node = svgEl("text", { x, y, class: cls });
    node.textContent = text;
    return node;
  }

  function drawAxes(chart, f) {
    const bottom = f.margin.top + f.plotH;
    const yTicks = ticks(f.y0, f.y1, 5);
    for (const v of yTicks) {
      chart.append(svgEl("line", { x1: f.margin.left, x2: f.margin.left + f.plotW, y1: f.y(v), y2: f.y(v), class: "gridline" }));
      chart.append(svgText(f.margin.left - 8, f.y(v) + 4, fmtTick(v, yTicks.step), "tick y"));
    }
    const xTicks = ticks(f.x0, f.x1, Math.max(2, Math.floor(f.plotW / 80))).filter((v) => Number.isInteger(v));
    for (const v of xTicks) {
      chart.append(svgEl("line", { x1: f.x(v), x2: f.x(v), y1: bottom, y2: bottom + 4, class: "axis" }));
      chart.append(svgText(f.x(v), bottom + 17, String(v), "tick x"));
    }
    chart.append(svgEl("line", { x1: f.margin.left, x2: f.margin.left + f.plotW, y1: bottom, y2: bottom, class: "axis" }));
    chart.append(svgText(f.margin.left + f.plotW, bottom + 31, "trial", "axis-label"));
  }

  // The best score so far as a step line: what the optimizer has actually achieved.
  function drawBest(chart, f, trials) {
    let best = null;
    const corners = [];
    for (const t of trials) {
      if (t.score === null || (best !== null && t.score <= best)) continue;
      if (best !== null) corners.push([f.x(t.number), f.y(best)]); // along, then up
      best = t.score;
      corners.push([f.x(t.number), f.y(best)]);
    }
    if (best === null) return;
    corners.push([f.x(trials[trials.length - 1].number), f.y(best)]);
    const d = corners.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    chart.append(svgEl("path", { d, class: "best" }));
  }

  function drawPoint(chart, f, trial, kindClass) {
    const x = f.x(trial.number);
    let node;
    if (trial.score === null) {
      if (trial.status !== "failed") return; // still running: nothing to plot yet
      const y = f.margin.top + f.plotH - 7; // failed trials sit on the floor, marked with a cross
      node = svgEl("path", { d: `M${x - 4},${y - 4}L${x + 4},${y + 4}M${x - 4},${y + 4}L${x + 4},${y - 4}`, class: "pt failed" });
    } else {
      node = svgEl("circle", { cx: x, cy: f.y(trial.score), r: 4, class: `pt ${kindClass}` });
    }
    node.dataset.number = String(trial.number);
    node.addEventListener("mouseenter", () => showTip(trial, x, trial.score === null ? f.margin.top + f.plotH : f.y(trial.score)));
    node.addEventListener("mouseleave", hideTip);
    chart.append(node);
  }

  function renderLegend(kinds, trials) {
    const items = [...kinds].map(([kind, cls]) => el("span", { class: "legend-item" }, el("span", { class: `swatch ${cls}` }), kind));
    if (trials.some((t) => t.status === "failed")) items.push(el("span", { class: "legend-item" }, el("span", { class: "swatch failed", text: "×" }), "failed"));
    if (trials.some((t) => t.score !== null)) items.push(el("span", { class: "legend-item" }, el("span", { class: "swatch best" }), "best so far"));
    fill("chart-legend", items);
  }

  function showTip(trial, x, y) {
    const tip = $("chart-tip");
    tip.replaceChildren(
      el("strong", { text: `Trial ${trial.number}` }), ` · ${trial.kind} · `,
      trial.score === null ? el("span", { class: "bad-text", text: "failed" }) : `score ${fmtScore(trial.score)}`,
      el("div", { class: "muted", text: fmtClock(trial.created) }),
      el("div", { class: "clip mono", text: trial.error || trial.params }));
    tip.hidden = false;
    const wrap = $("chart-wrap").clientWidth;
    tip.style.left = `${Math.min(x + 12, wrap - 280)}px`;
    tip.style.top = `${Math.max(0, y - 20)}px`;
  }

  function hideTip() {
    $("chart-tip").hidden = true;
  }

  // --- runtime sections -------------------------------------------------------------

  function connecting(runtime) {
    return runtime.message.startsWith("connecting");
  }

  function notConnected(runtime) {
    const title = connecting(runtime) ? "Connecting to the runtime…" : "Runtime not connected";
    return empty(title, runtime.message.replace(/^runtime not connected: /, ""));
  }

  function sectionError(message) {
    return message ? el("div", { class: "callout warn small", text: `could not read: ${message}` }) : null;
  }

  function renderEvaluations(snapshot) {
    const runtime = snapshot.runtime;
    if (!runtime.connected) return fill("evaluations", notConnected(runtime));
    if (!runtime.evaluations.length) return fill("evaluations", empty("No evaluations yet", "Progress shows here while an evaluation runs."));
    fill("evaluations", runtime.evaluations.map((e) => el("div", { class: "eval" },
      el("div", { class: "eval-head" }, el("span", { class: "mono", text: e.source }), e.finished ? badge("done", "status ok") : badge("running", "status info")),
      progressBar(e.done, e.total, `${fmtInt(e.done)} / ${e.total === null ? "?" : fmtInt(e.total)}` +
        (e.errors ? ` · ${e.errors} error${e.errors === 1 ? "" : "s"}` : "") + (e.score !== null ? ` · score ${fmtScore(e.score)}` : "")))));
  }

  function renderPools(snapshot) {
    const runtime = snapshot.runtime;
    if (!runtime.connected) return fill("pools", notConnected(runtime));
    if (!runtime.pools.length) {
      return fill("pools", sectionError(runtime.errors.pools), empty("No provider pools", "A pool starts per model when a program makes LM calls under dspex.init()."));
    }
    const headers = [{ label: "Model" }, { label: "Breaker" }, { label: "In flight", num: true }, { label: "Queued", num: true },
      { label: "Req/s", num: true }, { label: "Calls", num: true }, { label: "Errors", num: true }, { label: "Cost", num: true }];
    const rows = runtime.pools.map((p) => el("tr", { title: p.error || `${p.name}\n${fmtInt(p.prompt_tokens + p.completion_tokens)} tokens, ${fmtInt(p.retries)} retries` },
      cell(el("span", { class: "mono", text: p.model })),
      cell([status(p.breaker), p.rate_limit_paused_for ? el("div", { class: "muted small", text: `rate-limited ${p.rate_limit_paused_for.toFixed(1)} s` }) : null]),
      cell(fmtInt(p.in_flight), true), cell(fmtInt(p.queued), true),
      cell(p.requests_per_s === null ? "—" : p.requests_per_s.toFixed(1), true),
      cell(fmtInt(p.calls), true), cell(p.errors ? el("span", { class: "bad-text", text: fmtInt(p.errors) }) : "0", true),
      cell(fmtCost(p.cost), true)));
    fill("pools", sectionError(runtime.errors.pools), table(headers, rows, { class: "compact" }));
  }

  function treeItem(node) {
    const restarts = node.restarts ? badge(`↻ ${node.restarts}`, "status warn") : null;
    // a served replica's version, an HTTP ingress's address
    const labels = Object.entries(node.labels || {}).map(([key, value]) => el("span", { class: "muted small mono", text: ` ${key}=${value}` }));
    return el("li", {},
      el("div", { class: "tree-node" }, el("span", { class: `dot ${STATUS_KINDS[node.status] || (node.status === "alive" ? "ok" : "mute")}` }),
        el("span", { class: "mono", text: node.name }), el("span", { class: "muted small", text: ` ${node.strategy ? `${node.kind} ${node.strategy}` : node.kind} · ${node.status}` }), restarts, labels),
      node.children.length ? el("ul", {}, node.children.map(treeItem)) : null);
  }

  function renderTree(snapshot) {
    const runtime = snapshot.runtime;
    if (!runtime.connected) return fill("tree", notConnected(runtime));
    if (!runtime.tree) return fill("tree", sectionError(runtime.errors.tree), empty("No supervision tree", "The tree appears once dspex.init() has started the root supervisor."));
    fill("tree", sectionError(runtime.errors.tree), el("ul", { class: "tree" }, treeItem(runtime.tree)));
  }

  function renderDeadLetters(snapshot) {
    const runtime = snapshot.runtime;
    if (!runtime.connected) return fill("dead-letters", notConnected(runtime));
    const letters = runtime.dead_letters;
    if (!letters.length) return fill("dead-letters", sectionError(runtime.errors.dead_letters), empty("No dead letters", "Every input was processed or is still being retried."));
    const headers = [{ label: "When" }, { label: "Source" }, { label: "Reason" }, { label: "Tries", num: true }];
    const rows = letters.map((d) => el("tr", { title: d.input },
      cell(d.time ? ago(d.time) : "—"), cell(el("span", { class: "mono", text: d.source })),
      cell(el("span", { class: "bad-text", text: d.reason })), cell(fmtInt(d.attempts), true)));
    fill("dead-letters", sectionError(runtime.errors.dead_letters), table(headers, rows, { class: "compact" }));
  }

  function eventSummary(data) {
    return Object.entries(data).map(([k, v]) => `${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v}`).join("  ");
  }

  function renderEvents(snapshot) {
    const runtime = snapshot.runtime;
    $("lm-requests").textContent = runtime.lm_requests ? `${fmtInt(runtime.lm_requests)} LM requests seen` : "";
    if (!runtime.connected) return fill("events", notConnected(runtime));
    if (!runtime.events.length) return fill("events", empty("No events yet", "Supervisor, breaker and trial events stream in here."));
    fill("events", el("ul", { class: "events" }, runtime.events.map((e) => el("li", {},
      el("span", { class: "muted mono", text: fmtClock(e.time) }),
      badge(e.kind, /fail|exit|crash/.test(e.kind) ? "status bad" : /restart|fallback/.test(e.kind) ? "status warn" : "status mute"),
      el("span", { class: "mono", text: e.source }),
      el("span", { class: "muted small clip", text: eventSummary(e.data) })))));
  }

  // --- start -------------------------------------------------------------------------

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.snapshot && state.snapshot.run) renderChart(state.snapshot.run); }, 150);
  });
  window.addEventListener("hashchange", () => { const run = runFromHash(); if (run) choose(run); });
  setInterval(tickClocks, 1000);
  connect();
})();
