// The noisecraft web page: talks to the server's job API (POST /v1/jobs, server-sent events for progress).
"use strict";
const $ = (id) => document.getElementById(id);
let currentJob = null;
let initImage = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("apikey").value) h["Authorization"] = "Bearer " + $("apikey").value;
  return h;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: headers() });
  return r.json();
}

async function init() {
  const models = await getJSON("/sdapi/v1/sd-models");
  for (const m of models) $("model").add(new Option(m.title, m.model_name));
  const samplers = await getJSON("/sdapi/v1/samplers");
  $("sampler").add(new Option("(the model's default)", ""));
  for (const s of samplers) $("sampler").add(new Option(s.name, s.name));
}

function numberOrNull(id) {
  const v = $(id).value;
  return v === "" ? null : Number(v);
}

function body() {
  const b = {
    model: $("model").value, prompt: $("prompt").value, negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler").value || null, steps: numberOrNull("steps"), cfg_scale: Number($("cfg_scale").value),
    seed: Number($("seed").value), batch_size: Number($("batch_size").value),
    width: numberOrNull("width"), height: numberOrNull("height"),
  };
  const classes = $("class_ids").value.split(",").map((v) => v.trim()).filter((v) => v !== "");
  if (classes.length) b.class_ids = classes.map(Number);  // a class-conditional model's classes
  if (initImage) {
    b.init_images = [initImage];
    b.denoising_strength = Number($("strength").value);
    if (maskDrawn) b.mask = maskCanvas().toDataURL("image/png");
  }
  return b;
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  $("progress").value = 0;
  $("status").textContent = "queued";
  const r = await fetch("/v1/jobs", { method: "POST", headers: headers(), body: JSON.stringify(body()) });
  const job = await r.json();
  if (!r.ok) {
    $("status").textContent = "error: " + job.detail;
    $("generate").disabled = false;
    return;
  }
  currentJob = job.id;
  $("cancel").disabled = false;
  follow(job.id);
}

function follow(id) {
  const events = new EventSource("/v1/jobs/" + id + "/events");
  const update = (e) => {
    const d = JSON.parse(e.data);
    $("progress").value = d.progress;
    $("status").textContent = d.state + " (step " + d.step + " of " + d.steps + ")";
    if (d.preview) { $("preview").src = "data:image/png;base64," + d.preview; $("preview").hidden = false; }
    return d;
  };
  events.addEventListener("progress", update);
  events.addEventListener("done", (e) => {
    const d = update(e);
    events.close();
    finish(d);
  });
}

function finish(d) {
  $("generate").disabled = false;
  $("cancel").disabled = true;
  currentJob = null;
  if (d.state !== "done") { $("status").textContent = d.state + (d.error ? ": " + d.error : ""); return; }
  $("status").textContent = "done: " + d.result.images.length + " image(s)";
  d.result.images.forEach((png, i) => addToGallery(png, d.result.infotexts[i], d.result.seeds[i]));
}

function addToGallery(png, infotext, seed) {
  const fig = document.createElement("figure");
  const link = document.createElement("a");
  link.href = "data:image/png;base64," + png;
  link.download = "noisecraft-" + seed + ".png";  // the PNG keeps its parameters chunk
  const img = document.createElement("img");
  img.src = link.href;
  img.alt = infotext;
  img.className = "result";
  link.appendChild(img);
  const cap = document.createElement("figcaption");
  cap.textContent = "seed " + seed;
  fig.append(link, cap);
  $("gallery").prepend(fig);
}

async function cancel() {
  if (currentJob) await fetch("/v1/jobs/" + currentJob + "/cancel", { method: "POST", headers: headers() });
}

function readAsDataURL(file) {
  return new Promise((resolve) => { const r = new FileReader(); r.onload = () => resolve(r.result); r.readAsDataURL(file); });
}

async function showParameters(file) {
  const data = await readAsDataURL(file);
  const r = await fetch("/sdapi/v1/png-info", { method: "POST", headers: headers(), body: JSON.stringify({ image: data }) });
  const d = await r.json();
  $("params").textContent = r.ok ? (d.info || "(no parameters in this PNG)") : "error: " + d.detail;
}

// Inpainting: the uploaded image under a canvas the mask is drawn on (white = regenerate).
let maskDrawn = false;
const maskCanvas = () => $("maskcanvas");
function clearMask() {
  const c = maskCanvas().getContext("2d");
  c.fillStyle = "black"; c.fillRect(0, 0, 256, 256); maskDrawn = false;
}
function drawAt(e) {
  const c = maskCanvas(), rect = c.getBoundingClientRect(), ctx = c.getContext("2d");
  ctx.fillStyle = "white";
  ctx.beginPath();
  ctx.arc((e.clientX - rect.left) * c.width / rect.width, (e.clientY - rect.top) * c.height / rect.height, 16, 0, 7);
  ctx.fill();
  maskDrawn = true;
}
let drawing = false;
maskCanvas().addEventListener("pointerdown", (e) => { drawing = true; drawAt(e); });
maskCanvas().addEventListener("pointermove", (e) => { if (drawing) drawAt(e); });
window.addEventListener("pointerup", () => { drawing = false; });
maskCanvas().addEventListener("keydown", (e) => {  // keyboard: Enter masks the centre, Delete clears
  if (e.key === "Enter") { const r = maskCanvas().getBoundingClientRect(); drawAt({ clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 }); e.preventDefault(); }
  if (e.key === "Delete" || e.key === "Backspace") clearMask();
});
$("clearmask").addEventListener("click", clearMask);
$("init").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  initImage = file ? await readAsDataURL(file) : null;
  maskCanvas().style.backgroundImage = initImage ? "url(" + initImage + ")" : "";
  maskCanvas().style.backgroundSize = "cover";
  const c = maskCanvas().getContext("2d"); c.clearRect(0, 0, 256, 256); maskDrawn = false;
});

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) showParameters(e.dataTransfer.files[0]); });
$("pnginfo").addEventListener("change", (e) => { if (e.target.files[0]) showParameters(e.target.files[0]); });
$("form").addEventListener("submit", generate);
$("cancel").addEventListener("click", cancel);
init();
