// The facefoundry playground (issue 15): one form per endpoint, built from /openapi.json so it
// follows the protocol models, calling the same /v1 and /v2 routes as every client (auth,
// credits, rate limits and the queue apply). No build step and no dependencies.

const KEY_STORAGE = "facefoundry.api-key";
// Behind a proxy the page may live under a prefix (X-Forwarded-Prefix): every call is made
// relative to where the page was served from.
const ROOT = location.pathname.replace(/\/playground(\/[^/]*)?$/, "");
const API = `${location.origin}${ROOT}`;
const LIVE_DEBOUNCE_MS = 350;
const POLL_MS = 500;
// A slider is only useful when its span is small enough for one pixel to mean something;
// wider ranges (seeds up to 2**63-1) get a number box.
const SLIDER_SPAN_MAX = 10000;

// What some endpoints' results need beyond the generic form (issue 15, "Build").
const BEHAVIOUR = {
  "expression-editor": { livePreview: true },
  "face-to-sticker": { checkerboard: true },
  "consistent-character": { queued: true },
  sadtalker: { queued: true },
};

const $ = (id) => document.getElementById(id);

const state = {
  doc: null,
  endpoints: [],
  endpoint: null,
  controls: [],
  route: "v1",
  epoch: 0, // bumped on every endpoint switch: answers for an older form are dropped
  objectUrls: [],
  live: { timer: 0, busy: false, again: false },
};

// -- the OpenAPI document -------------------------------------------------------------------

/** The schema a local `$ref` points to, or the schema itself. */
function resolved(doc, schema) {
  let node = schema;
  while (node && node.$ref) {
    node = node.$ref
      .replace(/^#\//, "")
      .split("/")
      .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
      .reduce((parent, key) => parent[key], doc);
  }
  return node || {};
}

/** The endpoints the server enables: slug, title, description, request schema and output kind. */
function endpointsOf(doc) {
  const found = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    const match = path.match(/^\/v1\/([^/{}]+)$/);
    const operation = item.post;
    const schema = operation?.requestBody?.content?.["application/json"]?.schema;
    if (!match || !schema) continue;
    const slug = match[1];
    const produced = Object.keys(operation.responses?.["200"]?.content || {});
    found.push({
      slug,
      title: operation.tags?.[0] || slug,
      description: operation.description || "",
      schema: resolved(doc, schema),
      output: produced.some((type) => type.startsWith("video/")) ? "video" : "image",
      hasQueue: Boolean(doc.paths[`/v2/${slug}`]?.post),
    });
  }
  return found;
}

/** The number step of a float slider: about a hundredth of its span, rounded to a power of ten. */
function sliderStep(span) {
  return 10 ** (Math.floor(Math.log10(span)) - 2);
}

function decimalsOf(step) {
  return step >= 1 ? 0 : Math.round(-Math.log10(step));
}

/**
 * One form field from a property of the request schema. pydantic writes an optional field as
 * `anyOf: [T, {type: null}]`; media fields carry `format: "uri"` (server/protocol.py).
 */
function fieldOf(doc, name, property, required) {
  const variants = (property.anyOf || [property]).map((variant) => resolved(doc, variant));
  const value = { ...property, ...(variants.find((variant) => variant.type !== "null") || {}) };
  const nullable = variants.some((variant) => variant.type === "null");
  const field = {
    name,
    title: property.title || name,
    description: property.description || "",
    required,
    default: property.default,
  };
  if (property.format === "uri" || value.format === "uri") {
    // The schema says "a media reference"; only the name tells audio from an image.
    return { ...field, control: "media", media: /audio/i.test(name) ? "audio" : "image" };
  }
  if (value.enum) return { ...field, control: "select", options: value.enum };
  if (value.type === "boolean") return { ...field, control: nullable ? "tristate" : "checkbox" };
  if (value.type === "number" || value.type === "integer") {
    const integer = value.type === "integer";
    const { minimum: min, maximum: max } = value;
    if (Number.isFinite(min) && Number.isFinite(max) && max - min <= SLIDER_SPAN_MAX) {
      return { ...field, control: "slider", min, max, integer, step: integer ? 1 : sliderStep(max - min) };
    }
    return { ...field, control: "number", min, max, integer };
  }
  return { ...field, control: "text" };
}

function fieldsOf(doc, schema) {
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([name, property]) =>
    fieldOf(doc, name, property, required.has(name)),
  );
}

// -- calling the server ---------------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { "x-api-key": key } : {};
}

/** Shows the tiny-profile banner whenever a response says so (x-weights-profile: tiny). */
function noteProfile(response) {
  if (response.headers.get("x-weights-profile") === "tiny") $("tiny-banner").hidden = false;
}

async function call(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  noteProfile(response);
  return response;
}

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The server's `{"error": ...}` message of a failed response, or its status line. */
async function failureOf(response) {
  const text = await response.text();
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    if (text && text.length < 300 && !text.trimStart().startsWith("<")) message = text;
  }
  return new ApiFailure(response.status, message);
}

function post(path, body) {
  return call(`${API}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function refreshCredits() {
  const label = $("credits");
  if (!apiKey()) {
    label.textContent = "";
    return;
  }
  try {
    const response = await call(`${API}/v1/get-user-credits`);
    if (!response.ok) {
      label.textContent = (await failureOf(response)).message;
      return;
    }
    label.textContent = `credits: ${(await response.json()).credits}`;
  } catch {
    label.textContent = ""; // unreachable server: the form says so when it is used
  }
}

// -- form controls --------------------------------------------------------------------------

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== undefined && value !== null) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** Text with its `code` spans (the OpenAPI descriptions are Markdown) as <code> elements. */
function withCodeSpans(text) {
  return text.split("`").map((part, i) => (i % 2 ? element("code", { text: part }) : document.createTextNode(part)));
}

function fieldBox(field, control) {
  const label = element("label", { class: "label", for: `field-${field.name}` }, [
    element("span", { text: field.title }),
    element("span", { class: "required", text: field.required ? "required" : "" }),
  ]);
  const hint = element("p", { class: "hint", text: `${field.name}: ${field.description}` });
  return element("div", { class: "field", "data-field": field.name }, [label, hint, control]);
}

/** A control: its element, how to read its value (undefined: leave the field out) and, for
 *  media, which local file it came from (for the snippets). */
function sliderControl(field) {
  const start = field.default ?? field.min;
  const range = element("input", {
    type: "range", id: `field-${field.name}`, name: field.name,
    min: field.min, max: field.max, step: field.step, value: start,
  });
  const box = element("input", {
    type: "number", name: `${field.name}-value`, "aria-label": `${field.title} value`,
    min: field.min, max: field.max, step: field.step, value: start,
  });
  range.addEventListener("input", () => { box.value = range.value; });
  box.addEventListener("input", () => { if (box.value !== "") range.value = box.value; });
  const read = () => {
    const value = Number(box.value === "" ? range.value : box.value);
    return Number(value.toFixed(decimalsOf(field.step)));
  };
  return { node: element("div", { class: "slider" }, [range, box]), read, slider: true };
}

function selectControl(field) {
  const select = element("select", { id: `field-${field.name}`, name: field.name },
    field.options.map((option) => element("option", {
      value: String(option), text: String(option), selected: option === field.default,
    })));
  const read = () => field.options.find((option) => String(option) === select.value);
  return { node: select, read };
}

function checkboxControl(field) {
  const box = element("input", { type: "checkbox", id: `field-${field.name}`, name: field.name, checked: Boolean(field.default) });
  return { node: box, read: () => box.checked };
}

function tristateControl(field) {
  const select = element("select", { id: `field-${field.name}`, name: field.name }, [
    element("option", { value: "", text: "server default" }),
    element("option", { value: "true", text: "true" }),
    element("option", { value: "false", text: "false" }),
  ]);
  return { node: select, read: () => (select.value === "" ? undefined : select.value === "true") };
}

function numberControl(field) {
  const box = element("input", {
    type: "number", id: `field-${field.name}`, name: field.name, min: field.min, max: field.max,
    step: field.integer ? 1 : "any", value: field.default ?? "", placeholder: field.default == null ? "random" : "",
  });
  const read = () => {
    const text = box.value.trim();
    if (text === "") return undefined;
    const value = Number(text);
    // Seeds go up to 2**63-1; past 2**53 a JSON number would lose digits, and the server
    // coerces numeric strings (segmind-api.md §6).
    return field.integer && !Number.isSafeInteger(value) ? text : value;
  };
  return { node: box, read };
}

function textControl(field) {
  const area = element("textarea", { id: `field-${field.name}`, name: field.name, rows: 2 });
  area.value = field.default ?? "";
  return { node: area, read: () => (area.value === "" && !field.required && field.default == null ? undefined : area.value) };
}

function readAsDataUri(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** Mono 16-bit PCM WAV of an AudioBuffer. */
function wavOf(audio) {
  const samples = new Float32Array(audio.length);
  for (let channel = 0; channel < audio.numberOfChannels; channel += 1) {
    const data = audio.getChannelData(channel);
    for (let i = 0; i < data.length; i += 1) samples[i] += data[i] / audio.numberOfChannels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const ascii = (offset, text) => [...text].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples.length, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, audio.sampleRate, true);
  view.setUint32(28, audio.sampleRate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  ascii(36, "data");
  view.setUint32(40, 2 * samples.length, true);
  samples.forEach((sample, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, sample)) * 0x7fff, true));
  return new Blob([view.buffer], { type: "audio/wav" });
}

/** A recording as WAV: browsers record webm/ogg Opus, which the server does not take (it reads
 *  mp3, wav, m4a, ogg Vorbis or flac, server/media.py), so the recording is decoded here. */
async function recordingAsWav(chunks, type) {
  const context = new AudioContext();
  try {
    const audio = await context.decodeAudioData(await new Blob(chunks, { type }).arrayBuffer());
    return wavOf(audio);
  } finally {
    context.close();
  }
}

function mediaControl(field, onChange) {
  let source = null; // {fileName, dataUri} of a picked, dropped or recorded file
  const accept = `${field.media}/*`;
  const file = element("input", { type: "file", id: `field-${field.name}`, name: field.name, accept });
  const reference = element("input", {
    type: "text", name: `${field.name}-reference`, placeholder: "or an http(s) URL, base64 or data URI",
    "aria-label": `${field.title} URL or base64`,
  });
  const preview = field.media === "audio"
    ? element("audio", { class: "preview", controls: true, hidden: true })
    : element("img", { class: "preview", alt: "", hidden: true });
  const caption = element("span", { class: "source" });
  const drop = element("div", { class: "drop" }, [preview, caption]);

  const show = (url, text) => {
    preview.hidden = !url;
    if (url) preview.src = url;
    else preview.removeAttribute("src");
    caption.replaceChildren(text || `drop a${field.media === "image" ? "n image" : "n audio"} file here`);
  };
  const useBlob = async (blob, fileName) => {
    source = { fileName, dataUri: await readAsDataUri(blob) };
    reference.value = "";
    show(source.dataUri, fileName);
    onChange();
  };
  file.addEventListener("change", () => {
    if (file.files[0]) useBlob(file.files[0], file.files[0].name);
  });
  reference.addEventListener("input", () => {
    source = null;
    file.value = "";
    const text = reference.value.trim();
    show(/^(https?:|data:)/.test(text) ? text : "", text ? "" : undefined);
    onChange();
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const dropped = event.dataTransfer.files[0];
    if (dropped) useBlob(dropped, dropped.name);
  });

  const pickers = element("div", { class: "pickers" }, [file]);
  if (field.media === "audio") pickers.append(recorderButton(caption, (blob) => useBlob(blob, "recording.wav")));
  show("");
  const read = () => source?.dataUri ?? (reference.value.trim() || undefined);
  return { node: element("div", { class: "media" }, [pickers, reference, drop]), read, file: () => source?.fileName };
}

function recorderButton(caption, done) {
  const button = element("button", { type: "button", class: "record", text: "Record" });
  // getUserMedia exists only in a secure context (https, or http on localhost).
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    button.disabled = true;
    button.title = "Recording needs https (or http on localhost)";
    return button;
  }
  let recorder = null;
  let timer = 0;
  button.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      caption.textContent = `microphone: ${error.message}`;
      return;
    }
    const chunks = [];
    const started = performance.now();
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", async () => {
      clearInterval(timer);
      stream.getTracks().forEach((track) => track.stop());
      const type = recorder.mimeType;
      recorder = null;
      button.textContent = "Record";
      try {
        done(await recordingAsWav(chunks, type));
      } catch (error) {
        caption.textContent = `the recording could not be decoded: ${error.message}`;
      }
    });
    recorder.start();
    button.textContent = "Stop";
    timer = setInterval(() => {
      caption.replaceChildren(element("span", {
        class: "recording", text: `recording ${((performance.now() - started) / 1000).toFixed(1)} s`,
      }));
    }, 100);
  });
  return button;
}

const CONTROLS = {
  slider: sliderControl,
  select: selectControl,
  checkbox: checkboxControl,
  tristate: tristateControl,
  number: numberControl,
  text: textControl,
};

function buildForm(endpoint) {
  const fields = fieldsOf(state.doc, endpoint.schema);
  const onChange = () => formChanged(false);
  state.controls = fields.map((field) => {
    const control = field.control === "media" ? mediaControl(field, onChange) : CONTROLS[field.control](field);
    return { field, ...control };
  });
  $("fields").replaceChildren(...state.controls.map((control) => fieldBox(control.field, control.node)));
}

/** The JSON body the form describes; fields left empty are left out (the server's defaults). */
function requestBody() {
  const body = {};
  for (const control of state.controls) {
    const value = control.read();
    if (value !== undefined) body[control.field.name] = value;
  }
  return body;
}

function localFiles() {
  const files = {};
  for (const control of state.controls) {
    const name = control.file?.();
    if (name) files[control.field.name] = name;
  }
  return files;
}

function missingRequired(body) {
  return state.controls.filter((c) => c.field.required && body[c.field.name] === undefined).map((c) => c.field.name);
}

// -- snippets -------------------------------------------------------------------------------

/** The file extension of the output the body asks for. */
function outputExtension(endpoint, body) {
  if (endpoint.output === "video") return "mp4";
  const format = state.controls.find((c) => c.field.control === "select" && c.field.options.includes("png"));
  const chosen = format ? body[format.field.name] ?? format.field.default : "png";
  return chosen === "jpeg" ? "jpg" : chosen;
}

function shellQuoted(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/**
 * curl for the body. Local files are read with base64 in a command substitution (the server
 * takes raw base64, segmind-api.md §3), so the snippet runs as is next to those files; the JSON
 * goes through an unquoted heredoc, whose only specials ($, `, \) are escaped first.
 */
function curlSnippet({ endpoint, body, files, route }) {
  const marked = { ...body };
  for (const name of Object.keys(files)) marked[name] = `@@file:${name}@@`;
  let json = JSON.stringify(marked, null, 2).replace(/[\\$`]/g, (c) => `\\${c}`);
  for (const [name, fileName] of Object.entries(files)) {
    json = json.replace(`"@@file:${name}@@"`, `"$(base64 < ${shellQuoted(fileName)} | tr -d '\\n')"`);
  }
  const lines = [
    "# export SEGMIND_API_KEY=<your key>",
    `curl -sS -X POST ${shellQuoted(`${API}/${route}/${endpoint.slug}`)} \\`,
    '  -H "x-api-key: $SEGMIND_API_KEY" -H "Content-Type: application/json" \\',
  ];
  if (route === "v1" && !body.base64) lines.push(`  -o ${endpoint.slug}.${outputExtension(endpoint, body)} \\`);
  lines.push("  --data-binary @- <<EOF", json, "EOF");
  if (route === "v2") lines.push("# then GET the status_url it returns until COMPLETED, and the response_url");
  return lines.join("\n");
}

function pythonLiteral(value) {
  if (value === true) return "True";
  if (value === false) return "False";
  if (value === null) return "None";
  return JSON.stringify(value);
}

/** The same request through the segmind SDK 1.3.0 (README "Calling it"). */
function sdkSnippet({ endpoint, body, files, route }) {
  const names = Object.keys(files);
  const lines = [];
  if (names.length || (route === "v1" && body.base64)) lines.push("import base64");
  lines.push("from segmind import SegmindClient", "");
  if (names.length) {
    lines.push(
      "def b64(path):",
      '    with open(path, "rb") as f:',
      "        return base64.b64encode(f.read()).decode()",
      "",
    );
  }
  lines.push(
    "# The key comes from SEGMIND_API_KEY; base_url must end in /v1.",
    `client = SegmindClient(base_url=${JSON.stringify(`${API}/v1`)}, timeout=300)`,
  );
  const call = route === "v1" ? "response = client.run_sync(" : "result = client.run(";
  lines.push(call, `    ${JSON.stringify(endpoint.slug)},`);
  for (const [name, value] of Object.entries(body)) {
    const literal = name in files ? `b64(${JSON.stringify(files[name])})` : pythonLiteral(value);
    lines.push(`    ${name}=${literal},`);
  }
  lines.push(")");
  const out = JSON.stringify(`${endpoint.slug}.${outputExtension(endpoint, body)}`);
  if (route === "v2") {
    lines.push(endpoint.output === "video" ? 'print(result["video"]["url"])' : 'print([image["url"] for image in result["images"]])');
  } else if (body.base64) {
    const key = endpoint.output === "video" ? "video" : "image";
    lines.push(`with open(${out}, "wb") as f:`, `    f.write(base64.b64decode(response.json()[${JSON.stringify(key)}]))`);
  } else {
    lines.push(`with open(${out}, "wb") as f:`, "    f.write(response.content)");
  }
  return lines.join("\n");
}

function showSnippets() {
  const request = { endpoint: state.endpoint, body: requestBody(), files: localFiles(), route: state.route };
  // Data URIs of picked files are replaced by the files' names; other long values are shown whole.
  $("snippet-curl").textContent = curlSnippet(request);
  $("snippet-sdk").textContent = sdkSnippet(request);
}

function selectSnippet(which) {
  for (const tab of document.querySelectorAll(".snippet-tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.snippet === which));
  }
  $("snippet-curl").hidden = which !== "curl";
  $("snippet-sdk").hidden = which !== "sdk";
}

async function copySnippet() {
  const shown = $("snippet-curl").hidden ? $("snippet-sdk") : $("snippet-curl");
  const button = $("copy");
  try {
    await navigator.clipboard.writeText(shown.textContent);
    button.textContent = "Copied";
  } catch {
    // The clipboard API needs a secure context: select the text for Ctrl+C instead.
    getSelection().selectAllChildren(shown);
    button.textContent = "Press Ctrl+C";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// -- results --------------------------------------------------------------------------------

function clearResult() {
  state.objectUrls.forEach((url) => URL.revokeObjectURL(url));
  state.objectUrls = [];
  $("output").replaceChildren();
  $("output").className = "output";
  $("error").hidden = true;
  $("status").textContent = "";
}

function showError(error) {
  $("error").textContent = error instanceof ApiFailure ? `HTTP ${error.status}: ${error.message}` : error.message;
  $("error").hidden = false;
}

function showProgress(text) {
  $("progress").hidden = text === null;
  $("progress-text").textContent = text || "";
}

function download(url, fileName) {
  return element("a", { class: "download", href: url, download: fileName, text: `Download ${fileName}` });
}

/** Shows the result files: a video player, one image, or a gallery of several. */
function showFiles(kind, files) {
  const output = $("output");
  output.classList.toggle("gallery", files.length > 1);
  output.classList.toggle("checkerboard", Boolean(BEHAVIOUR[state.endpoint.slug]?.checkerboard));
  output.replaceChildren(...files.map(({ url, fileName }) => {
    const media = kind === "video"
      ? element("video", { src: url, controls: true, playsinline: true, preload: "auto" })
      : element("img", { src: url, alt: fileName });
    return element("figure", {}, [media, element("figcaption", {}, [download(url, fileName)])]);
  }));
}

function extensionOf(contentType) {
  const subtype = (contentType.split(";")[0].split("/")[1] || "bin").trim();
  return subtype === "jpeg" ? "jpg" : subtype;
}

function base64Blob(text, type) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

async function runSync(endpoint, body) {
  const started = performance.now();
  const response = await post(`/v1/${endpoint.slug}`, body);
  if (!response.ok) throw await failureOf(response);
  let blob;
  if ((response.headers.get("content-type") || "").startsWith("application/json")) {
    // base64=true: {"image": b64} or {"video": b64} (segmind-api.md §2.2)
    const key = endpoint.output === "video" ? "video" : "image";
    const type = endpoint.output === "video" ? "video/mp4" : `image/${outputExtension(endpoint, body).replace("jpg", "jpeg")}`;
    blob = base64Blob((await response.json())[key], type);
  } else {
    blob = await response.blob();
  }
  const requestId = response.headers.get("x-request-id") || "result";
  return {
    files: [{ blob, fileName: `${endpoint.slug}-${requestId.slice(0, 8)}.${extensionOf(blob.type)}` }],
    facts: {
      "request": requestId,
      "generation": seconds(response.headers.get("x-generation-time")),
      "round trip": seconds(((performance.now() - started) / 1000).toFixed(2)),
      "seed": response.headers.get("x-seed-value"),
      "cost": response.headers.get("x-cost"),
      "credits left": response.headers.get("x-remaining-credits"),
    },
  };
}

async function runQueued(endpoint, body, isCurrent) {
  const submitted = await post(`/v2/${endpoint.slug}`, body);
  if (!submitted.ok) throw await failureOf(submitted);
  const job = await submitted.json();
  const started = performance.now();
  for (;;) {
    const response = await call(job.status_url);
    const status = await response.clone().json().catch(() => ({}));
    if (status.status === "FAILED") throw new ApiFailure(response.status, status.error || "the job failed");
    if (!response.ok) throw await failureOf(response);
    if (status.status === "COMPLETED") break;
    if (!isCurrent()) return null;
    showProgress(`${String(status.status || "waiting").toLowerCase()} · ${((performance.now() - started) / 1000).toFixed(0)} s · ${job.request_id}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  const response = await call(job.response_url);
  if (!response.ok) throw await failureOf(response);
  const result = await response.json();
  const listed = endpoint.output === "video" ? [result.video] : result.images || [];
  return {
    files: listed.map((file) => ({ url: file.url, fileName: file.file_name })),
    facts: {
      "request": result.request_id,
      "inference": seconds(result.metrics?.inference_time),
      "queued": seconds(result.metrics?.queue_time),
      "seed": result.seed,
      "cost": result.metrics?.cost,
      "credits left": result.metrics?.remaining_credits,
    },
  };
}

function seconds(value) {
  return value === null || value === undefined ? undefined : `${value} s`;
}

function describeFacts(facts) {
  return Object.entries(facts)
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([name, value]) => `${name}: ${value}`)
    .join(" · ");
}

async function run(route) {
  const endpoint = state.endpoint;
  const epoch = state.epoch;
  const isCurrent = () => epoch === state.epoch;
  state.route = route;
  showSnippets();
  const body = requestBody();
  const missing = missingRequired(body);
  if (missing.length) {
    clearResult();
    showError(new Error(`Fill in ${missing.join(", ")} first.`));
    return;
  }
  const buttons = [$("run-v1"), $("run-v2")];
  buttons.forEach((button) => { button.disabled = true; });
  showProgress(route === "v1" ? "running…" : "submitting…");
  try {
    const result = route === "v1" ? await runSync(endpoint, body) : await runQueued(endpoint, body, isCurrent);
    if (!result || !isCurrent()) return;
    clearResult();
    const files = result.files.map(({ blob, url, fileName }) => {
      if (!blob) return { url, fileName };
      const objectUrl = URL.createObjectURL(blob);
      state.objectUrls.push(objectUrl);
      return { url: objectUrl, fileName };
    });
    showFiles(endpoint.output, files);
    $("status").textContent = `${route} · ${describeFacts(result.facts)}`;
    refreshCredits();
  } catch (error) {
    if (!isCurrent()) return;
    clearResult();
    showError(error);
  } finally {
    if (isCurrent()) showProgress(null);
    buttons.forEach((button) => { button.disabled = false; });
  }
}

// -- live preview ---------------------------------------------------------------------------

/** One preview in flight at a time; changes made meanwhile send one more request afterwards, so
 *  a dragged slider never queues a pile of billed jobs. */
async function livePreview() {
  const live = state.live;
  if (live.busy) {
    live.again = true;
    return;
  }
  live.busy = true;
  try {
    await run("v1");
  } finally {
    live.busy = false;
    if (live.again) {
      live.again = false;
      livePreview();
    }
  }
}

function formChanged(fromSlider) {
  showSnippets();
  const live = state.live;
  const wanted = BEHAVIOUR[state.endpoint.slug]?.livePreview && $("live").checked;
  if (!wanted || !fromSlider || missingRequired(requestBody()).length) return;
  clearTimeout(live.timer);
  live.timer = setTimeout(livePreview, LIVE_DEBOUNCE_MS);
}

// -- page -----------------------------------------------------------------------------------

function selectEndpoint(slug) {
  const endpoint = state.endpoints.find((e) => e.slug === slug) || state.endpoints[0];
  state.endpoint = endpoint;
  state.epoch += 1;
  clearTimeout(state.live.timer);
  const behaviour = BEHAVIOUR[endpoint.slug] || {};
  state.route = behaviour.queued && endpoint.hasQueue ? "v2" : "v1";
  for (const tab of $("endpoints").children) tab.setAttribute("aria-selected", String(tab.dataset.slug === endpoint.slug));
  $("endpoint-title").textContent = `${endpoint.title} · ${endpoint.slug}`;
  $("endpoint-description").replaceChildren(...withCodeSpans(endpoint.description));
  $("live-label").hidden = !behaviour.livePreview;
  $("run-v2").hidden = !endpoint.hasQueue;
  $("run-v1").classList.toggle("primary", state.route === "v1");
  $("run-v2").classList.toggle("primary", state.route === "v2");
  buildForm(endpoint);
  clearResult();
  showProgress(null);
  showSnippets();
  if (location.hash !== `#${endpoint.slug}`) history.replaceState(null, "", `#${endpoint.slug}`);
}

function wirePage() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  let creditsTimer = 0;
  key.addEventListener("input", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    clearTimeout(creditsTimer);
    creditsTimer = setTimeout(refreshCredits, 400);
  });
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(event.submitter?.value || state.route);
  });
  $("fields").addEventListener("input", (event) => formChanged(event.target.type === "range" || event.target.closest(".slider") !== null));
  for (const tab of document.querySelectorAll(".snippet-tab")) {
    tab.addEventListener("click", () => selectSnippet(tab.dataset.snippet));
  }
  $("copy").addEventListener("click", copySnippet);
  window.addEventListener("hashchange", () => {
    const slug = location.hash.slice(1);
    if (slug !== state.endpoint?.slug) selectEndpoint(slug);
  });
}

async function start() {
  wirePage();
  try {
    const response = await call(`${API}/openapi.json`);
    if (!response.ok) throw await failureOf(response);
    state.doc = await response.json();
  } catch (error) {
    $("load-error").textContent = `The API description (/openapi.json) could not be read: ${error.message}`;
    $("load-error").hidden = false;
    return;
  }
  state.endpoints = endpointsOf(state.doc);
  if (!state.endpoints.length) {
    $("load-error").textContent = "This server enables no endpoint.";
    $("load-error").hidden = false;
    return;
  }
  $("endpoints").replaceChildren(...state.endpoints.map((endpoint) => {
    const tab = element("button", { type: "button", role: "tab", "data-slug": endpoint.slug, text: endpoint.title });
    tab.addEventListener("click", () => selectEndpoint(endpoint.slug));
    return tab;
  }));
  $("workspace").hidden = false;
  selectEndpoint(location.hash.slice(1));
  refreshCredits();
}

start();
