// The lightsr page: send images to /v1/jobs, follow them, compare before and after.
// Plain JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const ZOOMS = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16];
const POLL_MS = 250;
const TOKEN_KEY = "lightsr-token";

const state = {
  auth: false,
  models: [],
  shown: null, // the job in the viewer
  zoom: null, // null: fit the view; otherwise screen pixels per image pixel
};

// ------------------------------------------------------------------------- the API

function authHeaders() {
  const token = $("token").value.trim();
  return state.auth && token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders() });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // not one of our JSON errors: keep the status line
    }
    throw new Error(message);
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------------- settings

async function loadModels() {
  const info = await (await api("/v1/models?catalog=false")).json();
  state.models = info.served;
  const select = $("model");
  select.replaceChildren(
    ...info.served.map((m) => new Option(m.label, m.name)),
  );
  select.value = info.default_model;
  fillScales();
  say("");
}

function fillScales() {
  const model = state.models.find((m) => m.name === $("model").value);
  if (!model) return;
  const select = $("scale");
  // Any-scale models take any factor from 1 to 8: offer some between the integers too.
  const scales = model.arbitrary_scale ? [1.5, 2, 2.5, 3, 3.5, 4, 6, 8] : model.scales;
  select.replaceChildren(...scales.map((s) => new Option(`×${s}`, String(s))));
  select.value = String(model.default_scale);
}

function say(text) {
  $("message").textContent = text;
}

// ------------------------------------------------------------------------- jobs

function submitAll(files) {
  if (!state.models.length) {
    say(state.auth ? "Enter the server's token first." : "The server lists no models.");
    return;
  }
  for (const file of files) submit(file);
}

async function submit(file) {
  const job = addJob(file);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("model", $("model").value);
  form.append("scale", $("scale").value);
  form.append("format", $("format").value);
  try {
    const status = await (await api("/v1/jobs", { method: "POST", body: form })).json();
    job.id = status.id;
    await follow(job, status);
  } catch (error) {
    setStatus(job, `Failed: ${error.message}`);
    finish(job);
  }
}

function addJob(file) {
  const item = document.createElement("li");
  item.className = "job";
  item.innerHTML = `
    <span class="job-name"></span>
    <span class="job-status" aria-live="polite">Uploading…</span>
    <progress max="1"></progress>
    <span class="job-actions">
      <button type="button" class="show" hidden>Show</button>
      <button type="button" class="cancel">Cancel</button>
    </span>`;
  item.querySelector(".job-name").textContent = file.name;
  const job = { file, item, id: null, before: URL.createObjectURL(file), after: null, name: null };
  item.querySelector(".show").addEventListener("click", () => show(job));
  item.querySelector(".cancel").addEventListener("click", () => cancel(job));
  $("jobs").append(item);
  $("no-jobs").hidden = true;
  return job;
}

async function follow(job, status) {
  for (;;) {
    describe(job, status);
    if (status.state === "done") return fetchResult(job, status);
    if (status.state === "failed" || status.state === "cancelled") return finish(job);
    await sleep(POLL_MS);
    status = await (await api(`/v1/jobs/${job.id}`)).json();
  }
}

function describe(job, status) {
  const bar = job.item.querySelector("progress");
  const { done, total } = status.progress;
  if (status.state === "queued") {
    setStatus(job, status.position === 1 ? "Queued: next" : `Queued: place ${status.position}`);
    bar.removeAttribute("value");
  } else if (status.state === "running") {
    setStatus(job, total > 1 ? `Upscaling: tile ${done} of ${total}` : "Upscaling…");
    if (total > 1) bar.value = done / total;
    else bar.removeAttribute("value");
  } else if (status.state === "done") {
    const { width, height } = status.output;
    setStatus(job, `Done: ${width}×${height} in ${status.seconds.toFixed(1)} s`);
    bar.value = 1;
  } else {
    setStatus(job, status.error ? `${capitalize(status.state)}: ${status.error.message}` : status.state);
  }
}

async function fetchResult(job, status) {
  const response = await api(status.result_url);
  const disposition = response.headers.get("Content-Disposition") || "";
  job.name = (disposition.match(/filename="([^"]+)"/) || [])[1] || `upscaled.${status.format}`;
  job.after = URL.createObjectURL(await response.blob());
  finish(job);
  job.item.querySelector(".show").hidden = false;
  if (!state.shown) await show(job);
}

async function cancel(job) {
  if (!job.id) return;
  try {
    describe(job, await (await api(`/v1/jobs/${job.id}`, { method: "DELETE" })).json());
  } catch (error) {
    say(error.message);
  }
}

function setStatus(job, text) {
  job.item.querySelector(".job-status").textContent = text;
}

function finish(job) {
  job.item.querySelector(".cancel").hidden = true;
}

const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// ------------------------------------------------------------------------- the viewer

async function show(job) {
  const before = $("before");
  const after = $("after");
  before.src = job.before;
  after.src = job.after;
  await Promise.all([before.decode(), after.decode()]);
  state.shown = job;
  for (const item of $("jobs").children) item.classList.toggle("current", item === job.item);
  const download = $("download");
  download.href = job.after;
  download.download = job.name;
  $("sizes").textContent =
    `${before.naturalWidth}×${before.naturalHeight} → ${after.naturalWidth}×${after.naturalHeight}`;
  $("viewer").hidden = false;
  setZoom(null);
  setSplit(Number($("split").value));
}

function fitZoom() {
  const after = $("after");
  const stage = $("stage");
  const height = Math.max(200, window.innerHeight * 0.7);
  return Math.min(stage.clientWidth / after.naturalWidth, height / after.naturalHeight);
}

function currentZoom() {
  return state.zoom ?? fitZoom();
}

function setZoom(zoom) {
  const stage = $("stage");
  const canvas = $("canvas");
  const after = $("after");
  // Keep the point at the middle of the view where it is.
  const middleX = (stage.scrollLeft + stage.clientWidth / 2) / (canvas.offsetWidth || 1);
  const middleY = (stage.scrollTop + stage.clientHeight / 2) / (canvas.offsetHeight || 1);
  state.zoom = zoom;
  const z = currentZoom();
  canvas.style.width = `${after.naturalWidth * z}px`;
  canvas.style.height = `${after.naturalHeight * z}px`;
  canvas.classList.toggle("pixelated", z >= 1);
  stage.scrollLeft = middleX * canvas.offsetWidth - stage.clientWidth / 2;
  stage.scrollTop = middleY * canvas.offsetHeight - stage.clientHeight / 2;
  const percent = `${Math.round(z * 100)}%`;
  $("zoom-level").textContent = zoom === null ? `Fit (${percent})` : percent;
}

function stepZoom(direction) {
  const z = currentZoom();
  const next =
    direction > 0 ? ZOOMS.find((level) => level > z * 1.001) : ZOOMS.findLast((level) => level < z / 1.001);
  if (next) setZoom(next);
}

function setSplit(percent) {
  const value = Math.min(100, Math.max(0, percent));
  $("split").value = String(Math.round(value));
  $("split").setAttribute("aria-valuetext", `${Math.round(value)}% before, ${Math.round(100 - value)}% after`);
  $("after").style.clipPath = `inset(0 0 0 ${value}%)`;
  $("divider").style.left = `${value}%`;
}

function splitFromPointer(event) {
  const box = $("canvas").getBoundingClientRect();
  setSplit(((event.clientX - box.left) / box.width) * 100);
}

// ------------------------------------------------------------------------- wiring

function wire() {
  $("files").addEventListener("change", (event) => {
    submitAll(event.target.files);
    event.target.value = "";
  });
  const drop = $("drop");
  // A file dropped next to the zone must not make the browser leave the page.
  for (const kind of ["dragover", "drop"]) document.addEventListener(kind, (e) => e.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    submitAll(event.dataTransfer.files);
  });
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  $("model").addEventListener("change", fillScales);
  $("token").addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    loadModels().catch((error) => say(error.message));
  });

  $("zoom-in").addEventListener("click", () => stepZoom(1));
  $("zoom-out").addEventListener("click", () => stepZoom(-1));
  $("zoom-fit").addEventListener("click", () => setZoom(null));
  $("zoom-actual").addEventListener("click", () => setZoom(1));
  $("split").addEventListener("input", (event) => setSplit(Number(event.target.value)));
  window.addEventListener("resize", () => state.shown && state.zoom === null && setZoom(null));

  const stage = $("stage");
  stage.addEventListener("keydown", (event) => {
    const actions = { "+": () => stepZoom(1), "=": () => stepZoom(1), "-": () => stepZoom(-1) };
    Object.assign(actions, { 0: () => setZoom(1), f: () => setZoom(null) });
    const action = actions[event.key];
    if (action && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      action();
    }
  });
  stage.addEventListener(
    "wheel",
    (event) => {
      if (!event.ctrlKey) return; // plain wheel scrolls
      event.preventDefault();
      stepZoom(-Math.sign(event.deltaY));
    },
    { passive: false },
  );
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    splitFromPointer(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (canvas.hasPointerCapture(event.pointerId)) splitFromPointer(event);
  });
}

async function start() {
  wire();
  const health = await (await fetch("/healthz")).json();
  state.auth = health.auth;
  if (state.auth) {
    const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
    $("token").value = fromLink || sessionStorage.getItem(TOKEN_KEY) || "";
    $("token-field").hidden = false;
    if (fromLink) {
      sessionStorage.setItem(TOKEN_KEY, fromLink);
      history.replaceState(null, "", location.pathname); // keep the token out of history
    }
  }
  try {
    await loadModels();
  } catch (error) {
    say(state.auth ? `${error.message}: enter the server's token.` : error.message);
  }
}

start();
