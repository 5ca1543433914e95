// The live dashboard: a tile per camera with its MJPEG stream (or, when every stream slot is
// taken, snapshots paced at the camera's own rate), the camera's fps, frame age and state as
// /status reports them, the last error of a camera that is down, the world model's objects,
// and the URLs to copy into Mainsail, Fluidd, Moonraker or OctoPrint. Served by the gateway
// itself: no CDN, works offline.
"use strict";

const STATUS_PERIOD_MS = 1000;
const FALLBACK_RETRY_STREAM_MS = 30000;
const tiles = new Map(); // camera id (string) -> tile state
let world = { objects: [] };

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function base() {
  return `${location.protocol}//${location.host}`;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) { // plain http off localhost has no clipboard API: select and copy instead
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "copied";
  setTimeout(() => { button.textContent = label; }, 1200);
}

function copyRow(label, value, multiline = false) {
  const row = el("div");
  const field = el(multiline ? "textarea" : "input", { readonly: "", spellcheck: "false" });
  field.value = value;
  const button = el("button", { type: "button" }, "copy");
  button.addEventListener("click", () => copyText(field.value, button));
  const line = el("div", { class: "copy" });
  line.append(field, button);
  row.append(el("label", {}, label), line);
  return row;
}

function urlsFor(id, entry) {
  const stream = `${base()}/?action=stream&cam=${id}`;
  const snapshot = `${base()}/?action=snapshot&cam=${id}`;
  const name = (entry.name || `camera ${id}`).toLowerCase().replace(/[^a-z0-9]+/g, "_");
  const conf = `[webcam ${name}]\nservice: mjpegstreamer-adaptive\nstream_url: ${stream}\n` +
    `snapshot_url: ${snapshot}\ntarget_fps: 15`;
  const details = el("details");
  if (location.hash === "#urls") details.open = true; // a link that shows every URL at once
  details.append(el("summary", {}, "URLs for Mainsail · Fluidd · Moonraker · OctoPrint"));
  const box = el("div", { class: "urls" });
  box.append(
    copyRow("Stream URL (Mainsail/Fluidd stream_url, OctoPrint Stream URL)", stream),
    copyRow("Snapshot URL (snapshot_url, OctoPrint Snapshot URL)", snapshot),
    copyRow("moonraker.conf", conf, true),
    el("small", { class: "hint" }, "Mainsail served over HTTPS, remote access, or MainsailOS's " +
       "/webcamN/ paths want relative URLs: `camfabric moonraker --path-prefix /webcam2/` prints them."),
  );
  details.append(box);
  return details;
}

function makeTile(id, entry) {
  const tile = el("article", { class: "tile", id: `camera-${id}` });
  const view = el("div", { class: "view" });
  const [w, h] = entry.resolution || [16, 9];
  if (w > 0 && h > 0) view.style.aspectRatio = `${w} / ${h}`;
  const img = el("img", { alt: `camera ${id}`, hidden: "" });
  const canvas = el("canvas");
  const down = el("div", { class: "down", hidden: "" });
  const downText = el("span", {}, "camera down");
  const downWhy = el("small");
  down.append(downText, downWhy);
  view.append(img, canvas, down);
  const head = el("div", { class: "head" });
  head.append(el("span", { class: "name" }, `${id} · ${entry.name || "camera"}`),
              el("span", { class: "role" }, entry.role || ""));
  const badge = el("span", { class: "badge" }, "…");
  head.append(badge);
  const stats = el("div", { class: "stats" });
  const fps = el("span"), age = el("span"), size = el("span"), node = el("span");
  stats.append(fps, age, size, node);
  const error = el("div", { class: "error", hidden: "" });
  const objects = el("ul", { class: "objects" });
  tile.append(view, head, stats, error, objects, urlsFor(id, entry));
  document.getElementById("cameras").append(tile);
  const t = { id, img, canvas, down, downText, downWhy, badge, fps, age, size, node, error, objects,
              mode: "idle", fps_value: 15, lastStamp: null, url: null, retry: null };
  img.addEventListener("load", () => { img.hidden = false; drawOverlay(t); });
  img.addEventListener("error", () => streamFailed(t));
  tiles.set(id, t);
  return t;
}

function startStream(t) {
  clearTimeout(t.retry);
  t.mode = "stream";
  t.img.src = `/cam/${t.id}?t=${Date.now()}`;
}

function stopStream(t) {
  clearTimeout(t.retry);
  if (t.mode === "stream") t.img.removeAttribute("src");
  t.mode = "idle";
}

function streamFailed(t) {
  if (t.mode !== "stream") return;
  // Every stream slot taken, or the gateway restarting: show snapshots paced at the camera's
  // rate meanwhile, and try the stream again later.
  t.mode = "snapshots";
  pollSnapshot(t);
  t.retry = setTimeout(() => { if (t.mode === "snapshots") startStream(t); }, FALLBACK_RETRY_STREAM_MS);
}

async function pollSnapshot(t) {
  if (t.mode !== "snapshots") return;
  try {
    const resp = await fetch(`/latest/${t.id}`, { cache: "no-store" });
    if (resp.ok) {
      const stamp = resp.headers.get("X-Timestamp");
      const blob = await resp.blob();
      if (stamp !== t.lastStamp) {
        t.lastStamp = stamp;
        const url = URL.createObjectURL(blob);
        if (t.url) URL.revokeObjectURL(t.url);
        t.url = url;
        t.img.src = url;
      }
    }
  } catch (err) {
    // the gateway is unreachable: the status poll says so
  }
  setTimeout(() => pollSnapshot(t), Math.max(33, 1000 / (t.fps_value || 1)));
}

function drawOverlay(t) {
  const { canvas, img } = t;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!img.naturalWidth || img.hidden) return;
  // The image is letterboxed by object-fit: contain; map image pixels into the canvas.
  const scale = Math.min(w / img.naturalWidth, h / img.naturalHeight);
  const ox = (w - img.naturalWidth * scale) / 2, oy = (h - img.naturalHeight * scale) / 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const obj of world.objects || []) {
    const px = obj.pixel && obj.pixel[String(t.id)];
    if (!px) continue;
    const x = ox + px[0] * scale, y = oy + px[1] * scale;
    ctx.strokeStyle = obj.stale ? "#ffc857" : "#5fd38d";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, 10, 0, 2 * Math.PI); ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(`${obj.label || obj.id} ${Math.round((obj.confidence || 0) * 100)}%`, x + 13, y + 4);
  }
}

function formatAge(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function lastError(s) {
  const health = s.health || {};
  const gateway = health.gateway || {};
  if (health.last_error) return String(health.last_error);
  if (!s.connected && gateway.heartbeat_age_s > 2) return `no heartbeat from node ${s.node} for ${gateway.heartbeat_age_s.toFixed(0)} s`;
  return "";
}

function showCamera(t, s) {
  const gateway = (s.health && s.health.gateway) || {};
  const hasFrame = gateway.frame_age_ms !== null && gateway.frame_age_ms !== undefined;
  t.fps_value = s.fps || 0;
  t.fps.innerHTML = `<b>${(s.fps || 0).toFixed(1)}</b> fps`;
  t.age.innerHTML = `age <b>${formatAge(gateway.frame_age_ms)}</b>`;
  t.size.textContent = s.width && s.height ? `${s.width}×${s.height}` : "";
  t.node.textContent = `node ${s.node}`;
  const why = lastError(s);
  if (s.duplicate) {
    t.badge.className = "badge warn";
    t.badge.textContent = "duplicate id";
    t.error.hidden = false;
    t.error.textContent = s.duplicate.message;
  } else if (s.connected) {
    t.badge.className = "badge ok";
    t.badge.textContent = "live";
    t.error.hidden = !why;
    t.error.textContent = why ? `last error: ${why}` : "";
  } else {
    t.badge.className = "badge bad";
    t.badge.textContent = "down";
    t.error.hidden = false;
    t.error.textContent = why ? `last error: ${why}` : "the camera is disconnected";
  }
  t.down.hidden = s.connected || false;
  const lastPicture = !t.img.hidden && t.img.naturalWidth > 0;
  t.down.classList.toggle("over-picture", lastPicture);
  t.downText.textContent = lastPicture ? "camera down — last picture" : "camera down";
  t.downWhy.textContent = why;
  if (s.connected && hasFrame && t.mode === "idle") startStream(t);
  if (!s.connected && !t.img.naturalWidth) stopStream(t); // never a broken image
  t.objects.replaceChildren(...(world.objects || [])
    .filter((o) => o.pixel && o.pixel[String(t.id)])
    .map((o) => {
      const p = o.position_mm || {};
      const where = p.x !== undefined ? ` at (${[p.x, p.y, p.z].map((v) => Math.round(v)).join(", ")}) mm` : "";
      return el("li", { class: o.stale ? "stale" : "" },
                `${o.label || o.id}${where} · ${Math.round((o.confidence || 0) * 100)}%`);
    }));
  drawOverlay(t);
}

function showWorld() {
  const section = document.getElementById("world");
  const objects = world.objects || [];
  section.hidden = objects.length === 0;
  section.querySelector("tbody").replaceChildren(...objects.map((o) => {
    const p = o.position_mm || {};
    const row = el("tr");
    row.append(el("td", {}, `${o.label || o.id}${o.stale ? " (stale)" : ""}`),
               el("td", {}, p.x !== undefined ? [p.x, p.y, p.z].map((v) => v.toFixed(0)).join(", ") : "–"),
               el("td", {}, `${Math.round((o.confidence || 0) * 100)}%`),
               el("td", {}, Object.keys(o.pixel || {}).join(", ") || String(o.camera ?? "–")));
    return row;
  }));
}

async function refresh() {
  try {
    const [cameras, status, model] = await Promise.all(
      ["/cameras", "/status", "/world"].map((p) => fetch(p, { cache: "no-store" }).then((r) => r.json())));
    world = model;
    for (const [id, entry] of Object.entries(cameras)) {
      if (!tiles.has(id)) makeTile(id, entry);
    }
    for (const [id, t] of tiles) { // a camera its node no longer has (restarted without it)
      if (id in cameras) continue;
      stopStream(t);
      document.getElementById(`camera-${id}`)?.remove();
      tiles.delete(id);
    }
    document.getElementById("empty").hidden = tiles.size > 0;
    let up = 0;
    for (const [id, t] of tiles) {
      const s = status[id];
      if (!s) continue;
      if (s.connected) up += 1;
      showCamera(t, s);
    }
    showWorld();
    const objects = (world.objects || []).length;
    document.getElementById("summary").textContent =
      `${up}/${tiles.size} cameras live · ${objects} object${objects === 1 ? "" : "s"} in the world model`;
  } catch (err) {
    document.getElementById("summary").textContent = "gateway unreachable — retrying";
  }
  setTimeout(refresh, STATUS_PERIOD_MS);
}

refresh();
