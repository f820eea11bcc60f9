"use strict";
// The page speaks the same OpenAI-compatible API as any client: /v1/chat/completions with
// stream: true (server-sent events), images and audio as content parts, plus /v1/patches for
// the picture of where the model's patches fall in an answer. No build step: plain DOM code.

const $ = (id) => document.getElementById(id);
const page = { model: null, history: [], attachments: [], busy: false };

// --------------------------------------------------------------------------- talking to the server

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function fail(res) {
  const body = await res.json().catch(() => ({}));
  throw new Error((body.error && body.error.message) || `${res.status} ${res.statusText}`);
}

async function connect() {
  for (;;) {
    const res = await fetch("/health").catch(() => null);
    const body = res ? await res.json().catch(() => ({})) : {};
    if (res && res.ok) break;
    $("status").textContent = body.status === "error" ? "the model failed to load: " + body.error : "loading the model…";
    if (body.status === "error") return;
    await new Promise((r) => setTimeout(r, 500));
  }
  $("status").textContent = "";
  const res = await fetch("/v1/models", { headers: headers() });
  if (!res.ok) {
    $("model").textContent = res.status === 401 ? "enter the API key below" : "no model";
    return;
  }
  page.model = (await res.json()).data[0].id;
  $("model").textContent = page.model;
}

// Server-sent events of one streamed request → onChunk(json) per event, until [DONE].
async function stream(url, body, onChunk) {
  const res = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) await fail(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onChunk(JSON.parse(data));
      }
    }
  }
}

// --------------------------------------------------------------------------- messages on the page

function addMessage(role) {
  const node = $("message").content.firstElementChild.cloneNode(true);
  node.classList.add(role);
  node.querySelector(".who").textContent = role === "user" ? "you" : page.model || "model";
  $("log").appendChild(node);
  return node;
}

function scrollDown() {
  $("log").scrollTop = $("log").scrollHeight;
}

// Content parts (image_url data URIs, base64 WAV input_audio) → <img> and <audio> in `into`.
function showParts(parts, into) {
  for (const part of parts) {
    if (part.type === "image_url") {
      const img = document.createElement("img");
      img.src = part.image_url.url;
      img.alt = "image";
      into.appendChild(img);
    } else if (part.type === "input_audio") {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = "data:audio/wav;base64," + part.input_audio.data;
      into.appendChild(audio);
    }
  }
}

function showError(node, message) {
  node.classList.add("error");
  node.querySelector(".meta").textContent = message;
}

// --------------------------------------------------------------------------- attachments

function readAs(file, how) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    if (how === "url") r.readAsDataURL(file); else r.readAsArrayBuffer(file);
  });
}

// Any audio the browser decodes → 8 kHz mono 16-bit WAV, base64 (the server's own rate: small uploads).
async function toWav(blob) {
  const data = await readAs(blob, "buffer");
  const ctx = new AudioContext();
  let decoded;
  try { decoded = await ctx.decodeAudioData(data); } finally { ctx.close(); }
  const rate = 8000;
  const offline = new OfflineAudioContext(1, Math.max(1, Math.ceil(decoded.duration * rate)), rate);
  const src = offline.createBufferSource();
  src.buffer = decoded;
  src.connect(offline.destination);
  src.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const out = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (at, s) => [...s].forEach((c, i) => out.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); out.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE");
  text(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, rate, true); out.setUint32(28, 2 * rate, true); out.setUint16(32, 2, true); out.setUint16(34, 16, true);
  text(36, "data"); out.setUint32(40, 2 * samples.length, true);
  samples.forEach((x, i) => out.setInt16(44 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(x * 32767))), true));
  let bin = "";
  const bytes = new Uint8Array(out.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

function addAttachment(part, label) {
  page.attachments.push(part);
  const chip = document.createElement("span");
  chip.className = "chip";
  chip.textContent = label;
  const x = document.createElement("button");
  x.textContent = "×";
  x.title = "remove";
  x.onclick = () => { page.attachments.splice(page.attachments.indexOf(part), 1); chip.remove(); };
  chip.appendChild(x);
  $("attachments").appendChild(chip);
}

async function attachFiles(files) {
  for (const file of files) {
    try {
      if (file.type.startsWith("image/")) {
        addAttachment({ type: "image_url", image_url: { url: await readAs(file, "url") } }, file.name);
      } else {
        addAttachment({ type: "input_audio", input_audio: { data: await toWav(file), format: "wav" } }, file.name);
      }
    } catch (e) {
      alert(`cannot read ${file.name}: ${e.message}`);
    }
  }
}

// The microphone, where the browser allows it (a secure context: https or localhost).
function setUpRecording() {
  if (!(window.isSecureContext && navigator.mediaDevices && window.MediaRecorder)) return;
  const button = $("record");
  button.hidden = false;
  let recorder = null;
  button.onclick = async () => {
    if (recorder) { recorder.stop(); return; }
    let mic;
    try { mic = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (e) { alert("no microphone: " + e.message); return; }
    const chunks = [];
    recorder = new MediaRecorder(mic);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
      mic.getTracks().forEach((t) => t.stop());
      recorder = null;
      button.classList.remove("on");
      button.textContent = "record";
      try {
        addAttachment({ type: "input_audio", input_audio: { data: await toWav(new Blob(chunks)), format: "wav" } }, "recording");
      } catch (e) { alert("cannot read the recording: " + e.message); }
    };
    recorder.start();
    button.classList.add("on");
    button.textContent = "stop";
  };
}

// --------------------------------------------------------------------------- asking

function request() {
  const mode = $("mode").value;
  const body = { model: page.model, messages: page.history, stream: true, stream_options: { include_usage: true },
                 temperature: Number($("temperature").value), top_p: Number($("top-p").value) };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if (mode === "image") {
    body.modalities = ["image"];
    body.image_size = $("image-size").value.trim();
    if ($("image-channels").value) body.image_channels = Number($("image-channels").value);
  } else if (mode === "audio") {
    body.modalities = ["audio"];
    body.audio_seconds = Number($("audio-seconds").value);
  } else {
    body.max_tokens = Number($("max-tokens").value);
  }
  return body;
}

async function send() {
  if (page.busy) return;
  const text = $("prompt").value;
  const parts = [...page.attachments, ...(text ? [{ type: "text", text }] : [])];
  if (!parts.length) return;
  if (!page.model) await connect();
  const content = parts.length === 1 && text ? text : parts;
  page.history.push({ role: "user", content });
  const mine = addMessage("user");
  showParts(parts, mine.querySelector(".parts"));
  mine.querySelector(".text").textContent = text;
  $("prompt").value = "";
  $("attachments").replaceChildren();
  page.attachments = [];
  await answer();
}

async function answer() {
  page.busy = true;
  $("send").disabled = true;
  const node = addMessage("assistant");
  const textEl = node.querySelector(".text");
  const meta = node.querySelector(".meta");
  const asked = page.history.slice();
  let text = "";
  const media = [];
  let finish = null, usage = null, bar = null;
  try {
    await stream("/v1/chat/completions", request(), (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      if (chunk.omnibyte) {
        if (!bar) { bar = document.createElement("progress"); meta.replaceChildren(bar); }
        bar.max = chunk.omnibyte.media_total;
        bar.value = chunk.omnibyte.media_ids;
      }
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      const c = choice.delta && choice.delta.content;
      if (typeof c === "string") {
        text += c;
        textEl.textContent = text;
      } else if (Array.isArray(c)) {
        media.push(...c);
        showParts(c, node.querySelector(".parts"));
      }
      if (choice.finish_reason) finish = choice.finish_reason;
      scrollDown();
    });
  } catch (e) {
    showError(node, e.message);
    page.history.pop();  // the question stays on the page, not in the conversation
    finish = null;
  }
  if (finish) {
    const parts = media.length ? [...(text ? [{ type: "text", text }] : []), ...media] : text;
    page.history.push({ role: "assistant", content: parts });
    meta.replaceChildren(Object.assign(document.createElement("span"), {
      textContent: `${finish === "length" ? "cut at the limit" : "done"}` +
        (usage ? ` · ${usage.prompt_tokens} bytes in, ${usage.completion_tokens} out` : ""),
    }));
    if (text) addPatchesButton(node, asked, text);
  }
  page.busy = false;
  $("send").disabled = false;
  scrollDown();
}

function addPatchesButton(node, asked, text) {
  const button = document.createElement("button");
  button.textContent = "patches";
  button.title = "where the model's patches fall in this answer";
  let frame = null;
  button.onclick = async () => {
    if (frame) { frame.hidden = !frame.hidden; return; }
    button.disabled = true;
    try {
      const res = await fetch("/v1/patches", { method: "POST", headers: headers(),
                                               body: JSON.stringify({ model: page.model, messages: asked, answer: text }) });
      if (!res.ok) await fail(res);
      const view = await res.json();
      frame = document.createElement("iframe");
      frame.className = "patches";
      frame.title = view.rule;
      frame.srcdoc = view.html;
      node.appendChild(frame);
    } catch (e) {
      showError(node, e.message);
    }
    button.disabled = false;
  };
  node.querySelector(".meta").appendChild(button);
}

// --------------------------------------------------------------------------- wiring

function showMode() {
  document.body.className = "mode-" + $("mode").value;
}

$("api-key").value = localStorage.getItem("omnibyte-api-key") || "";
$("api-key").onchange = () => { localStorage.setItem("omnibyte-api-key", $("api-key").value.trim()); connect(); };
$("send").onclick = send;
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("attach").onchange = async (e) => { await attachFiles([...e.target.files]); e.target.value = ""; };
$("mode").onchange = showMode;
$("clear").onclick = () => { page.history = []; $("log").replaceChildren(); };
showMode();
setUpRecording();
connect();
