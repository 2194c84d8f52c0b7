// See it stream: fetch /standard and /chunked of the chosen table, read each body with the Streams API,
// and show every row as it arrives. Drawing happens once per animation frame, never once per row, and no
// row is kept but the few the preview shows: memory stays flat however many rows come.
"use strict";

const WIDTH = 1000; // x runs 0..999
const HEIGHT = 500; // y runs 0..499 (1,000 rows per line, 500,000 rows fill the canvas)
const BAR_HEIGHT = 120; // the bar of a table without x and y
const PREVIEW_ROWS = 5;
const PREVIEW_CHARS = 40; // a longer value is cut in its cell (its start is in the cell's tooltip)
const TOOLTIP_CHARS = 400;
const TOKEN_KEY = "streaming_api.token";
const SERIES_COLOURS = { standard: "#e8590c", chunked: "#1c7ed6" };
// The value colour scale (viridis); style.css draws the same stops in the legend.
const STOPS = [[0x44, 0x01, 0x54], [0x3b, 0x52, 0x8b], [0x21, 0x91, 0x8c], [0x5e, 0xc9, 0x62], [0xfd, 0xe7, 0x25]];
const PALETTE = buildPalette(256);
const PLAIN_COLOUR = (255 << 24) | (0xce << 16) | (0xd4 << 8) | 0xce; // a row without a numeric value (ABGR)

function buildPalette(size) {
  // One RGBA pixel per entry, packed for a Uint32Array view of ImageData (little-endian: ABGR).
  const palette = new Uint32Array(size);
  for (let i = 0; i < size; i++) {
    const at = (i / (size - 1)) * (STOPS.length - 1);
    const low = Math.min(Math.floor(at), STOPS.length - 2);
    const t = at - low;
    const [r, g, b] = [0, 1, 2].map((c) => Math.round(STOPS[low][c] + (STOPS[low + 1][c] - STOPS[low][c]) * t));
    palette[i] = (255 << 24) | (b << 16) | (g << 8) | r;
  }
  return palette;
}

function colourOf(value) {
  if (typeof value !== "number") return PLAIN_COLOUR; // no value column, NULL, or "NaN" (a string in JSON)
  const index = Math.floor((value / 100) * PALETTE.length);
  return PALETTE[Math.max(0, Math.min(PALETTE.length - 1, index))];
}

// ---- token: from the URL fragment (never sent to the server) or the field; kept for this tab ----

const tokenInput = document.getElementById("token");
const limitInput = document.getElementById("limit");
const pageSizeInput = document.getElementById("page-size");
const message = document.getElementById("message");

function loadToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    // Out of the address bar, so it is not bookmarked or shared by accident.
    history.replaceState(null, "", location.pathname + location.search);
  }
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
}

tokenInput.addEventListener("change", () => {
  const token = tokenInput.value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  tablesLoading = loadTables();
});

function authorization() {
  const token = tokenInput.value.trim();
  return token ? { Authorization: `JWT ${token}` } : {};
}

function showMessage(html) {
  message.innerHTML = html;
  message.hidden = false;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function showUnauthorized(detail) {
  showMessage(
    `The server refused the token: ${escapeHtml(detail)}. ` +
      "Get one with <code>python run.py token</code> and paste it into the Token field, " +
      "or open the link that <code>python run.py</code> prints when it starts.",
  );
}

// ---- the tables: GET /tables fills the picker, the default table chosen first ----

const tablePicker = document.getElementById("table");
let tables = new Map(); // each served table's entry in GET /tables, by its URL name
let tablesLoading = null; // the pending GET /tables: a run waits for it, so it knows what it runs
let tablesAsked = 0;

async function loadTables() {
  const asked = ++tablesAsked;
  if (!tokenInput.value.trim()) return;
  let listing = null;
  try {
    const response = await fetch("/tables", { headers: authorization(), cache: "no-store" });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      if (asked === tablesAsked) showUnauthorized(body.detail || response.statusText);
    }
    if (response.ok) listing = await response.json();
  } catch {
    // Unreachable: the picker keeps what it has (at worst the default table, by the bare URLs).
  }
  if (asked === tablesAsked) fillPicker(listing);
}

function fillPicker(listing) {
  if (!listing?.tables?.length) return; // keep what is listed: a refused token is told in the message
  const previous = tablePicker.value;
  tables = new Map(listing.tables.map((table) => [table.name, table]));
  tablePicker.replaceChildren(
    ...listing.tables.map((table) => {
      const option = document.createElement("option");
      option.value = table.name;
      option.textContent = describeTable(table);
      return option;
    }),
  );
  // The choice stays across a reload of the list; else the default table (the bare /chunked's), else the first.
  const keep = [previous, listing.default].find((name) => tables.has(name));
  tablePicker.value = keep ?? listing.tables[0].name;
  tablePicker.dataset.state = "loaded";
  showTable(false);
}

function describeTable(table) {
  const kind = table.kind === "table" ? "" : ` (${table.kind})`;
  const rows = Number.isInteger(table.rows_estimate) && table.rows_estimate >= 0;
  return `${table.name}${kind}${rows ? ` · ~${table.rows_estimate.toLocaleString()} rows` : ""}`;
}

function chosenTable() {
  return tables.get(tablePicker.value) ?? null; // null: the default table, not described (no list yet)
}

// numeric x and y: a picture, a pixel per row; anything else: a bar. null: not known before the first row.
function viewOf(columns) {
  if (columns === null) return null;
  return columns.x === "number" && columns.y === "number" ? "picture" : "bar";
}

// What the page needs of a table's columns: which are numbers, by name.
function kindsOfColumns(table) {
  if (!table) return null;
  return Object.fromEntries(table.columns.map((column) => [column.name, isNumber(column.json) ? "number" : "other"]));
}

function kindsOfRow(row) {
  const kinds = Object.entries(row).map(([name, value]) => [name, typeof value === "number" ? "number" : "other"]);
  return Object.fromEntries(kinds);
}

function isNumber(schema) {
  if (schema.type === "number" || schema.type === "integer") return true;
  return [...(schema.oneOf ?? []), ...(schema.anyOf ?? [])].some(isNumber);
}

function showLegend(columns) {
  const view = viewOf(columns);
  if (view) document.body.dataset.view = view;
  else delete document.body.dataset.view;
  document.body.classList.toggle("plain", columns !== null && columns.value !== "number"); // no value scale
}

// The chosen table, shown blank in the panels. A run is of one table: another choice stops what runs;
// the list arriving does not (a run waiting for it keeps its place).
function showTable(stopRuns) {
  const table = chosenTable();
  for (const panel of panels) if (stopRuns || !panel.running) panel.clear(table);
  showLegend(kindsOfColumns(table));
  requestFrame();
}

tablePicker.addEventListener("change", () => showTable(true));

// ---- one panel: its canvas, its preview of the first rows, its counters, its request ----

class Panel {
  constructor(section) {
    this.section = section;
    this.endpoint = section.dataset.endpoint;
    this.canvas = section.querySelector("canvas");
    this.context = this.canvas.getContext("2d");
    this.image = this.context.createImageData(WIDTH, HEIGHT);
    this.pixels = new Uint32Array(this.image.data.buffer);
    this.preview = section.querySelector(".preview");
    this.table = null;
    this.columns = null;
    this.counters = Object.fromEntries(
      [...section.querySelectorAll("[data-counter]")].map((el) => [el.dataset.counter, el]),
    );
    this.status = section.querySelector(".status");
    this.controller = null;
    section.querySelector(".run").addEventListener("click", () => runPanels([this]));
    this.reset(null);
  }

  // Stop what runs, and show the table's view blank.
  clear(table) {
    this.controller?.abort();
    this.controller = null;
    this.reset(table);
  }

  reset(table) {
    this.table = table;
    this.section.dataset.table = table?.name ?? "";
    for (const stale of ["rows", "expected", "ttfbMs"]) delete this.section.dataset[stale];
    this.setColumns(kindsOfColumns(table));
    this.pixels.fill(0);
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.barWidth = -1;
    this.kept = [];
    this.keptNames = null;
    this.previewShown = 0;
    const placeholder = document.createElement("p");
    placeholder.textContent = "the first rows appear here";
    this.preview.replaceChildren(placeholder);
    this.startedAt = null;
    this.firstByteAt = null;
    this.rivalRows = null;
    this.finishedAt = null;
    this.rows = 0;
    this.bytes = 0;
    this.expected = null;
    this.dirtyFrom = HEIGHT;
    this.dirtyTo = -1;
    this.samples = [];
    this.setState("idle", "idle");
    this.updateCounters();
  }

  setColumns(columns) {
    this.columns = columns;
    this.view = viewOf(columns);
    this.section.dataset.view = this.view ?? "unknown";
    // Setting a canvas's size clears it: only when the view changes.
    const height = this.view === "bar" ? BAR_HEIGHT : HEIGHT;
    if (this.canvas.height !== height) this.canvas.height = height;
  }

  setState(state, text) {
    this.section.dataset.state = state;
    this.status.textContent = text;
  }

  url() {
    // The table's URL as GET /tables gives it (percent-encoded already); else the default table's.
    const url = new URL(this.table ? this.table.urls[this.endpoint] : `/${this.endpoint}`, location.origin);
    url.searchParams.set("format", "ndjson");
    if (limitInput.value !== "") url.searchParams.set("limit", limitInput.value);
    // /standard has no pages: it answers everything in one query, so it refuses page_size.
    if (this.endpoint === "chunked" && pageSizeInput.value !== "") {
      url.searchParams.set("page_size", pageSizeInput.value);
    }
    return url;
  }

  async run(startedAt, table) {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.reset(table);
    this.startedAt = startedAt;
    this.samples.push([0, 0]);
    this.setState("running", "waiting for the first byte…");
    requestFrame();
    try {
      const response = await fetch(this.url(), {
        headers: authorization(),
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        if (controller.signal.aborted) return;
        this.refused(response.status, body.error || "error", body.detail || response.statusText);
        return;
      }
      this.expected = expectedRows(response.headers);
      if (this.expected) this.section.dataset.expected = `${this.expected.exact ? "" : "~"}${this.expected.rows}`;
      await this.read(response.body.getReader());
      this.finish("done", `done: ${this.rows.toLocaleString()} rows`);
    } catch (error) {
      if (controller.signal.aborted) return;
      // A body cut short (a dropped connection, an aborted stream) lands here.
      this.finish("error", `failed after ${this.rows.toLocaleString()} rows: ${error.message}`);
    }
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let partial = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (this.firstByteAt === null) {
        this.firstByteAt = performance.now();
        this.section.dataset.ttfbMs = (this.firstByteAt - this.startedAt).toFixed(1);
        // What the other panel of the same run already had when this one saw its first byte.
        this.rivalRows = panels.find((p) => p !== this && p.startedAt === this.startedAt)?.rows ?? null;
        this.setState("running", "receiving…");
      }
      this.bytes += value.byteLength;
      // Split on newlines; the last piece may be half a row: keep it for the next chunk.
      const lines = (partial + decoder.decode(value, { stream: true })).split("\n");
      partial = lines.pop();
      for (const line of lines) {
        if (line) this.take(JSON.parse(line));
      }
    }
    partial += decoder.decode();
    if (partial) throw new Error("the body ended in the middle of a row");
  }

  take(row) {
    this.rows += 1;
    if (this.kept.length < PREVIEW_ROWS) this.keep(row);
    if (this.view === "picture") this.plot(row);
  }

  keep(row) {
    if (this.keptNames === null) {
      // The columns as the response names them (the first row's keys); the view too, if no list said.
      this.keptNames = Object.keys(row);
      if (this.columns === null) {
        this.setColumns(kindsOfRow(row));
        showLegend(this.columns);
      }
    }
    // Only the text the preview shows is kept, never the row (a value may weigh megabytes).
    this.kept.push(this.keptNames.map((name) => cellText(row[name])));
  }

  plot(row) {
    const x = Math.floor(row.x);
    const y = Math.floor(row.y);
    if (!(x >= 0 && x < WIDTH && y >= 0 && y < HEIGHT)) return; // outside the picture, or not a number
    this.pixels[y * WIDTH + x] = colourOf(row.value);
    if (y < this.dirtyFrom) this.dirtyFrom = y;
    if (y > this.dirtyTo) this.dirtyTo = y;
  }

  refused(status, error, detail) {
    if (status === 401) showUnauthorized(detail);
    this.finish("error", `${status} ${error}: ${detail}`);
  }

  finish(state, text) {
    this.finishedAt = performance.now();
    this.setState(state, text);
    this.section.dataset.rows = String(this.rows);
    this.draw(this.finishedAt);
    requestFrame();
  }

  get running() {
    return this.section.dataset.state === "running";
  }

  draw(now) {
    if (this.view === "bar") this.drawBar();
    else if (this.dirtyTo >= this.dirtyFrom) {
      // Only the lines that changed since the last frame go to the canvas.
      this.context.putImageData(this.image, 0, 0, 0, this.dirtyFrom, WIDTH, this.dirtyTo - this.dirtyFrom + 1);
      this.dirtyFrom = HEIGHT;
      this.dirtyTo = -1;
    }
    if (this.kept.length > this.previewShown) this.showPreview();
    if (this.startedAt !== null) this.samples.push([now - this.startedAt, this.rows]);
    this.updateCounters(now);
  }

  // The share of the announced rows received, left to right; the whole bar once every row is in.
  drawBar() {
    const state = this.section.dataset.state;
    let share = 0;
    if (state === "done") share = 1;
    else if (this.expected) share = this.expected.rows > 0 ? Math.min(this.rows / this.expected.rows, 1) : 0;
    const width = Math.round(share * WIDTH);
    if (width === this.barWidth) return;
    this.barWidth = width;
    const ctx = this.context;
    ctx.clearRect(0, 0, WIDTH, BAR_HEIGHT);
    ctx.fillStyle = SERIES_COLOURS[this.endpoint];
    ctx.fillRect(0, 0, width, BAR_HEIGHT);
    ctx.fillStyle = "rgba(255, 255, 255, 0.18)"; // tenths
    for (let tenth = 1; tenth < 10; tenth++) ctx.fillRect(tenth * (WIDTH / 10), 0, 1, BAR_HEIGHT);
  }

  // The first rows as a small table: names and values as text nodes, never as HTML.
  showPreview() {
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const name of this.keptNames) {
      const th = document.createElement("th");
      th.textContent = name;
      head.append(th);
    }
    const body = table.createTBody();
    for (const texts of this.kept) {
      const tr = body.insertRow();
      for (const [text, full, kind] of texts) {
        const td = tr.insertCell();
        td.textContent = text;
        if (full !== text) td.title = full;
        if (kind) td.className = kind;
      }
    }
    this.preview.replaceChildren(table);
    this.previewShown = this.kept.length;
  }

  updateCounters(now) {
    const set = (name, text) => (this.counters[name].textContent = text);
    if (this.startedAt === null) {
      for (const name of Object.keys(this.counters)) set(name, "–");
      return;
    }
    const end = this.finishedAt ?? now;
    const seconds = (end - this.startedAt) / 1000;
    set("ttfb", this.firstByteAt === null ? "–" : formatMs(this.firstByteAt - this.startedAt));
    set("rows", this.rows.toLocaleString());
    set("mb", (this.bytes / 1e6).toFixed(1));
    set("elapsed", formatMs(end - this.startedAt));
    set("rate", seconds > 0 && this.rows ? Math.round(this.rows / seconds).toLocaleString() : "–");
    // The rate for the time left runs from the first byte: the wait for it would skew it.
    const receiving = this.firstByteAt === null ? 0 : (end - this.firstByteAt) / 1000;
    const [done, left] = progressTexts(this.rows, receiving, this.expected, this.section.dataset.state);
    set("done", done);
    set("left", left);
  }
}

// A value as the preview shows it: [the cell's text, a longer one for its tooltip, a class].
function cellText(value) {
  if (value === null) return ["NULL", "NULL", "null"];
  const full = typeof value === "object" ? JSON.stringify(value) : String(value); // json, arrays: as JSON
  const kind = typeof value === "number" ? "number" : "";
  if (full.length <= PREVIEW_CHARS) return [full, full, kind];
  const tooltip = full.length <= TOOLTIP_CHARS ? full : `${full.slice(0, TOOLTIP_CHARS - 1)}…`;
  return [`${full.slice(0, PREVIEW_CHARS - 1)}…`, tooltip, kind];
}

// ---- how far: the rows the response announced (X-Row-Count, or X-Row-Count-Estimate) ----

function expectedRows(headers) {
  const exact = headers.get("X-Row-Count");
  const text = exact ?? headers.get("X-Row-Count-Estimate");
  const rows = text === null ? NaN : Number(text);
  return Number.isInteger(rows) && rows >= 0 ? { rows, exact: exact !== null } : null;
}

// The share done and the time left at the rate so far; "~" when the count is an estimate.
function progressTexts(rows, seconds, expected, state) {
  if (state === "done") return ["100%", "–"]; // whatever the estimate said, every row arrived
  if (!expected) return ["–", "–"];
  const about = expected.exact ? "" : "~";
  const share = expected.rows > 0 ? Math.min(rows / expected.rows, 1) : 1;
  const done = `${about}${Math.floor(share * 100)}%`;
  if (state !== "running" || rows === 0 || rows >= expected.rows || seconds <= 0) return [done, "–"];
  return [done, `${about}${formatMs(((expected.rows - rows) / (rows / seconds)) * 1000)}`];
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// ---- the timeline: rows received against time, both endpoints on one scale ----

const timeline = document.getElementById("timeline");

function drawTimeline() {
  const ratio = window.devicePixelRatio || 1;
  const width = timeline.clientWidth;
  const height = timeline.clientHeight;
  if (timeline.width !== Math.round(width * ratio) || timeline.height !== Math.round(height * ratio)) {
    timeline.width = Math.round(width * ratio);
    timeline.height = Math.round(height * ratio);
  }
  const ctx = timeline.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const series = panels.filter((p) => p.samples.length > 1);
  const maxMs = Math.max(1, ...series.map((p) => p.samples[p.samples.length - 1][0]));
  const maxRows = Math.max(1, ...series.map((p) => p.rows));
  const left = 70, right = 16, top = 10, bottom = 24;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  ctx.strokeStyle = "#d9dde3";
  ctx.fillStyle = "#5f6673";
  ctx.font = "12px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, top + plotH);
  ctx.lineTo(left + plotW, top + plotH);
  ctx.stroke();
  ctx.textAlign = "right";
  ctx.fillText(maxRows.toLocaleString(), left - 6, top + 10);
  ctx.fillText("0", left - 6, top + plotH);
  ctx.textAlign = "left";
  ctx.fillText("0 s", left, top + plotH + 16);
  ctx.textAlign = "right";
  ctx.fillText(formatMs(maxMs), left + plotW, top + plotH + 16);
  ctx.lineWidth = 2;
  for (const panel of series) {
    const point = ([ms, rows]) => [left + (ms / maxMs) * plotW, top + plotH - (rows / maxRows) * plotH];
    ctx.strokeStyle = SERIES_COLOURS[panel.endpoint];
    ctx.beginPath();
    panel.samples.forEach((sample, i) => (i === 0 ? ctx.moveTo(...point(sample)) : ctx.lineTo(...point(sample))));
    ctx.stroke();
  }
  // The legend, top left inside the plot.
  ctx.textAlign = "left";
  panels.forEach((panel, i) => {
    const y = top + 8 + i * 18;
    ctx.strokeStyle = ctx.fillStyle = SERIES_COLOURS[panel.endpoint];
    ctx.beginPath();
    ctx.moveTo(left + 12, y);
    ctx.lineTo(left + 32, y);
    ctx.stroke();
    ctx.fillText(`/${panel.endpoint}`, left + 38, y + 4);
  });
  ctx.lineWidth = 1;
  showVerdict();
}

const verdict = document.getElementById("verdict");

function showVerdict() {
  // Only for a "Run both" that has finished: which sent its first byte first, and how far ahead it was.
  const [a, b] = panels;
  const together = a.startedAt !== null && a.startedAt === b.startedAt;
  if (!together || a.firstByteAt === null || b.firstByteAt === null || a.running || b.running) {
    verdict.textContent = "";
    return;
  }
  const [first, second] = a.firstByteAt <= b.firstByteAt ? [a, b] : [b, a];
  const ttfb = (panel) => formatMs(panel.firstByteAt - panel.startedAt);
  verdict.textContent =
    `/${first.endpoint} had received ${(second.rivalRows ?? 0).toLocaleString()} rows ` +
    `before /${second.endpoint} sent its first byte (first byte after ${ttfb(first)} vs ${ttfb(second)}).`;
}

// ---- one animation frame draws everything that changed ----

const panels = [...document.querySelectorAll(".panel")].map((section) => new Panel(section));
let frameRequested = false;

function requestFrame() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    const now = performance.now();
    for (const panel of panels) {
      if (panel.running) panel.draw(now);
    }
    drawTimeline();
    if (panels.some((p) => p.running)) requestFrame();
  });
}

async function runPanels(which) {
  for (const panel of which) panel.setState("running", "waiting for the list of tables…");
  await tablesLoading;
  message.hidden = true;
  const table = chosenTable();
  // One start time for all: "Run both" starts both requests in the same tick.
  const startedAt = performance.now();
  for (const panel of which) panel.run(startedAt, table);
}

// ---- a link: the server signs the chosen export with this tab's token (POST /links) ----

const linkUrl = document.getElementById("link-url");

function linkPath() {
  const endpoint = document.getElementById("link-endpoint").value;
  const table = chosenTable();
  const url = new URL(table ? table.urls[endpoint] : `/${endpoint}`, location.origin);
  url.searchParams.set("format", document.getElementById("link-format").value);
  if (limitInput.value !== "") url.searchParams.set("limit", limitInput.value);
  return url.pathname + url.search;
}

async function makeLink() {
  linkUrl.value = "";
  delete linkUrl.dataset.state;
  await tablesLoading;
  const ttl = Number(document.getElementById("link-ttl").value || 900);
  try {
    const response = await fetch("/links", {
      method: "POST",
      headers: { ...authorization(), "Content-Type": "application/json" },
      body: JSON.stringify({ path: linkPath(), ttl }),
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) showUnauthorized(body.detail || response.statusText);
    if (!response.ok) {
      linkUrl.dataset.state = "error";
      linkUrl.value = `${response.status} ${body.error || "error"}: ${body.detail || response.statusText}`;
      return;
    }
    message.hidden = true;
    linkUrl.value = body.url;
    linkUrl.dataset.state = "made";
    linkUrl.title = `expires ${new Date(body.expires * 1000).toLocaleString()}`;
    linkUrl.select();
  } catch (error) {
    linkUrl.dataset.state = "error";
    linkUrl.value = `no link: ${error.message}`;
  }
}

document.getElementById("link-form").addEventListener("submit", (event) => {
  event.preventDefault();
  makeLink();
});

document.getElementById("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  runPanels(panels);
});
window.addEventListener("resize", drawTimeline);

loadToken();
showTable(false);
tablesLoading = loadTables();
drawTimeline();
