// The drawing page: a canvas (pointer events: mouse, touch and pen), the
// run's styles from /v1/styles, and /v1/generate for the photo.
"use strict";

const $ = (id) => document.getElementById(id);
// A server started with a token is opened as /#token=TOKEN: the fragment
// never reaches the server or its logs, and every API call carries it.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const auth = token ? {headers: {Authorization: `Bearer ${token}`}} : {};
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const state = {
  tool: "pen",
  undo: [],          // ImageData snapshots taken before each stroke
  upload: null,      // an uploaded sketch file, sent as-is until drawn over
  choice: null,      // {kind: "class", name} | {kind: "image"} | {kind: "mix"}
  styleFile: null,
  info: null,
  busy: false,
};

function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function snapshot() {
  state.undo.push(ctx.getImageData(0, 0, canvas.width, canvas.height));
  if (state.undo.length > 50) state.undo.shift();
}

// --- drawing -------------------------------------------------------------------------

function canvasPoint(event) {
  // The canvas is scaled by CSS; strokes go to its own pixel grid.
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width,
          (event.clientY - rect.top) * canvas.height / rect.height];
}

let last = null;

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  snapshot();
  state.upload = null;  // drawn over: the canvas is the sketch now
  last = canvasPoint(event);
  stroke(last, last);
});

canvas.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const point = canvasPoint(event);
  stroke(last, point);
  last = point;
});

for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
  canvas.addEventListener(name, () => { last = null; });
}

function stroke(from, to) {
  const width = Number($("pen-width").value);
  ctx.strokeStyle = state.tool === "pen" ? "#000" : "#fff";
  ctx.lineWidth = state.tool === "pen" ? width : width * 3;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

function selectTool(tool) {
  state.tool = tool;
  $("pen").classList.toggle("active", tool === "pen");
  $("eraser").classList.toggle("active", tool === "eraser");
}

$("pen").addEventListener("click", () => selectTool("pen"));
$("eraser").addEventListener("click", () => selectTool("eraser"));
$("undo").addEventListener("click", () => {
  const previous = state.undo.pop();
  if (previous) ctx.putImageData(previous, 0, 0);
});
$("clear").addEventListener("click", () => {
  snapshot();
  state.upload = null;
  clearCanvas();
});

$("sketch-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file);
    snapshot();
    clearCanvas();
    // Shown fitted into the canvas; sent as the original file (its own size).
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    state.upload = file;
    showError("");
  } catch (e) {
    showError(`${file.name}: not an image this browser can read`);
  }
  event.target.value = "";
});

// --- styles --------------------------------------------------------------------------

function choose(choice) {
  state.choice = choice;
  for (const button of document.querySelectorAll(".style")) {
    button.classList.toggle("selected", choice.kind === "class" && button.dataset.name === choice.name);
  }
  $("mix-on").checked = choice.kind === "mix";
  const words = {class: () => `style: ${choice.name}`, image: () => "style: reference photo",
                 mix: () => `style: ${mixText()}`};
  $("style-chosen").textContent = words[choice.kind]();
}

function mixText() {
  return `${$("mix-a").value}:${$("mix-b").value}:${Number($("mix-t").value).toFixed(2)}`;
}

function buildStyles(info) {
  const box = $("styles");
  for (const style of info.styles) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "style";
    button.dataset.name = style.name;
    button.title = `Render in the ${style.name} style`;
    const swatch = document.createElement("img");
    swatch.className = "swatch";
    swatch.src = style.swatch;
    swatch.alt = "";
    swatch.style.borderColor = style.color;
    const label = document.createElement("span");
    label.textContent = style.name;
    button.append(swatch, label);
    button.addEventListener("click", () => { choose({kind: "class", name: style.name}); generate(); });
    box.append(button);
  }
  if (info.style_image) $("photo-style").hidden = false;
  if (info.mix) {
    $("mix").hidden = false;
    for (const [select, index] of [[$("mix-a"), 0], [$("mix-b"), 1]]) {
      for (const style of info.styles) select.add(new Option(style.name, style.name));
      select.selectedIndex = index;
    }
    const onMix = () => {
      $("mix-value").textContent = Number($("mix-t").value).toFixed(2);
      choose({kind: "mix"});
    };
    $("mix-t").addEventListener("input", onMix);
    $("mix-t").addEventListener("change", generate);
    $("mix-a").addEventListener("change", onMix);
    $("mix-b").addEventListener("change", onMix);
    $("mix-on").addEventListener("change", () => {
      if ($("mix-on").checked) onMix();
      else if (info.styles.length) choose({kind: "class", name: info.styles[0].name});
    });
  }
  if (info.directions.length > 1) {
    $("direction-row").hidden = false;
    for (const d of info.directions) $("direction").add(new Option(d, d));
  }
  if (info.styles.length) choose({kind: "class", name: info.styles[0].name});
}

$("style-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  state.styleFile = file;
  const preview = $("style-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  choose({kind: "image"});
  generate();
});

// --- generating ----------------------------------------------------------------------

function showError(text) { $("error").textContent = text; }

function sketchBlob() {
  if (state.upload) return Promise.resolve(state.upload);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function generate() {
  if (state.busy) return;
  state.busy = true;
  $("spinner").hidden = false;
  $("generate").disabled = true;
  showError("");
  try {
    const form = new FormData();
    form.append("sketch", await sketchBlob(), "sketch.png");
    const choice = state.choice;
    if (choice && choice.kind === "class") form.append("style", choice.name);
    if (choice && choice.kind === "image") form.append("style_image", state.styleFile);
    if (choice && choice.kind === "mix") form.append("style_mix", mixText());
    if (state.info && state.info.directions.length > 1) form.append("direction", $("direction").value);
    const response = await fetch("/v1/generate", {method: "POST", body: form, ...auth});
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
    }
    const url = URL.createObjectURL(await response.blob());
    show(url);
    remember(url, $("style-chosen").textContent.replace("style: ", ""));
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    state.busy = false;
    $("spinner").hidden = true;
    $("generate").disabled = false;
  }
}

function show(url) {
  const result = $("result");
  result.src = url;
  result.hidden = false;
  const download = $("download");
  download.href = url;
  download.hidden = false;
}

function remember(url, caption) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = url;
  image.alt = caption;
  image.addEventListener("click", () => show(url));
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(image, text);
  $("history").prepend(figure);
}

$("generate").addEventListener("click", generate);

// --- start ---------------------------------------------------------------------------

clearCanvas();
fetch("/v1/styles", auth).then((r) => r.json()).then((info) => {
  state.info = info;
  $("model-info").textContent = `${info.model}, step ${info.step}, ${info.image_size}px`;
  buildStyles(info);
  document.body.dataset.ready = "true";
}).catch(() => showError("cannot reach the server"));
