// The live dashboard: a tile per camera with its live video — WebRTC (WHEP, the node's H.264)
// where the browser and the gateway can, else its MJPEG stream (or, when every stream slot is
// taken, snapshots paced at the camera's own rate), the camera's fps, frame age and state as
// /status reports them, the last error of a camera that is down, the world model's objects,
// and the URLs to copy into Mainsail, Fluidd, Moonraker or OctoPrint. Served by the gateway
// itself: no CDN, works offline.
"use strict";

const STATUS_PERIOD_MS = 1000;
const FALLBACK_RETRY_STREAM_MS = 30000;
const WEBRTC_FIRST_PICTURE_MS = 6000; // no picture by then: MJPEG instead
// ?player=mjpeg keeps to MJPEG; WebRTC is also left once the gateway says it has none (501).
let webrtcUsable = "RTCPeerConnection" in window &&
  new URLSearchParams(location.search).get("player") !== "mjpeg";
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

function urlsFor(id, webcam) {
  const stream = `${base()}/?action=stream&cam=${id}`;
  const snapshot = `${base()}/?action=snapshot&cam=${id}`;
  const conf = webcam.section; // moonraker.js: as `camfabric moonraker` prints it
  const details = el("details");
  if (location.hash === "#urls") details.open = true; // a link that shows every URL at once
  details.append(el("summary", {}, "URLs for Mainsail · Fluidd · Moonraker · OctoPrint"));
  const box = el("div", { class: "urls" });
  box.append(
    copyRow("Stream URL (Mainsail/Fluidd stream_url, OctoPrint Stream URL)", stream),
    copyRow("Snapshot URL (snapshot_url, OctoPrint Snapshot URL)", snapshot),
    copyRow("WebRTC stream_url (Mainsail/Fluidd service webrtc-mediamtx)", `${base()}/webrtc/${id}`),
    copyRow("moonraker.conf", conf, true),
    el("small", { class: "hint" }, "Mainsail served over HTTPS, remote access, or MainsailOS's " +
       "/webcamN/ paths want relative URLs: `camfabric moonraker --path-prefix /webcam2/` prints them."),
  );
  details.append(box);
  return details;
}

function makeTile(id, entry, webcam) {
  const tile = el("article", { class: "tile", id: `camera-${id}` });
  const view = el("div", { class: "view" });
  const [w, h] = entry.resolution || [16, 9];
  if (w > 0 && h > 0) view.style.aspectRatio = `${w} / ${h}`;
  const img = el("img", { alt: `camera ${id}`, hidden: "" });
  const video = el("video", { muted: "", autoplay: "", playsinline: "", hidden: "" });
  video.muted = true;
  const canvas = el("canvas");
  const down = el("div", { class: "down", hidden: "" });
  const downText = el("span", {}, "camera down");
  const downWhy = el("small");
  down.append(downText, downWhy);
  view.append(img, video, canvas, down);
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
  tile.append(view, head, stats, error, objects, urlsFor(id, webcam));
  document.getElementById("cameras").append(tile);
  const t = { id, tile, img, video, pc: null, session: null, canvas, down, downText, downWhy, badge, fps, age, size, node, error, objects,
              mode: "idle", fps_value: 15, lastStamp: null, url: null, retry: null };
  img.addEventListener("load", () => { img.hidden = false; drawOverlay(t); });
  img.addEventListener("error", () => streamFailed(t));
  tiles.set(id, t);
  return t;
}

function startStream(t) {
  clearTimeout(t.retry);
  if (webrtcUsable) {
    startWebrtc(t);
    return;
  }
  t.mode = "stream";
  t.tile.dataset.player = "mjpeg";
  t.img.src = `/cam/${t.id}?t=${Date.now()}`;
}

function stopStream(t) {
  clearTimeout(t.retry);
  if (t.mode === "stream") t.img.removeAttribute("src");
  if (t.mode === "webrtc") stopWebrtc(t);
  t.mode = "idle";
}

// WHEP, as Mainsail's webrtc-mediamtx player does it, with every host candidate in the offer
// (gathering on a LAN takes milliseconds) instead of trickling them.
async function startWebrtc(t) {
  t.mode = "webrtc";
  t.tile.dataset.player = "webrtc";
  t.tile.dataset.state = "connecting";
  const pc = t.pc = new RTCPeerConnection({ iceServers: [] });
  const failed = (why) => {
    if (t.pc !== pc) return;
    stopWebrtc(t);
    t.tile.dataset.state = "fallback";
    t.tile.dataset.fallback = why;
    webrtcUsable = webrtcUsable && why !== "not installed on the gateway";
    t.mode = "stream";
    t.tile.dataset.player = "mjpeg";
    t.img.src = `/cam/${t.id}?t=${Date.now()}`;
  };
  try {
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => { t.video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") failed("lost");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") done(); };
      setTimeout(done, 2000);
    });
    const resp = await fetch(`/webrtc/${t.id}/whep`, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
    if (resp.status === 501) return failed("not installed on the gateway");
    if (resp.status !== 201) return failed(`refused (${resp.status})`);
    t.session = new URL(resp.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  } catch (err) {
    return failed(`failed: ${err}`);
  }
  const firstPicture = setTimeout(() => { if (!t.video.videoWidth) failed("gave no picture"); },
                                  WEBRTC_FIRST_PICTURE_MS);
  t.video.onresize = () => {
    if (t.pc !== pc || !t.video.videoWidth) return;
    clearTimeout(firstPicture);
    t.video.hidden = false;
    t.img.hidden = true;
    t.tile.dataset.state = "connected";
    t.tile.dataset.videoWidth = String(t.video.videoWidth);
    t.tile.dataset.videoHeight = String(t.video.videoHeight);
    drawOverlay(t);
  };
}

function stopWebrtc(t) {
  if (t.session) fetch(t.session, { method: "DELETE" }).catch(() => {});
  if (t.pc) t.pc.close();
  t.pc = t.session = null;
  t.video.hidden = true;
  t.video.srcObject = null;
}

// What the tile shows now: the video, the image, or nothing yet.
function picture(t) {
  if (!t.video.hidden && t.video.videoWidth) {
    return { node: t.video, w: t.video.videoWidth, h: t.video.videoHeight };
  }
  if (!t.img.hidden && t.img.naturalWidth) {
    return { node: t.img, w: t.img.naturalWidth, h: t.img.naturalHeight };
  }
  return null;
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
  const { canvas } = t;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const shown = picture(t);
  if (!shown) return;
  // The picture is letterboxed by object-fit: contain; map its pixels into the canvas.
  const scale = Math.min(w / shown.w, h / shown.h);
  const ox = (w - shown.w * scale) / 2, oy = (h - shown.h * scale) / 2;
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
  const lastPicture = picture(t) !== null;
  t.down.classList.toggle("over-picture", lastPicture);
  t.downText.textContent = lastPicture ? "camera down — last picture" : "camera down";
  t.downWhy.textContent = why;
  // No cached frame is needed to start: the gateway subscribes a camera on demand, for the
  // stream itself (MJPEG: its JPEG; WebRTC: its H.264), so one nobody watched starts too.
  if (s.connected && t.mode === "idle") startStream(t);
  if (!s.connected && !lastPicture) stopStream(t); // never a broken image
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
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  section.querySelector("tbody").replaceChildren(...objects.map((o) => {
    // position_mm is /world's estimate for the moment of the request; uncertainty_mm its 95 % radius
    const p = o.position_mm || {};
    const v = o.velocity_mm_s || {};
    const where = num(p.x) ? [p.x, p.y, p.z].map((c) => c.toFixed(0)).join(", ") : "–";
    const radius = num(o.uncertainty_mm) ? ` ± ${o.uncertainty_mm.toFixed(o.uncertainty_mm < 10 ? 1 : 0)}` : "";
    const speed = num(v.x) && num(v.y) ? Math.hypot(v.x, v.y) : null;
    const row = el("tr");
    row.append(el("td", {}, `${o.label || o.id}${o.stale ? " (stale)" : ""}`),
               el("td", {}, where + radius),
               el("td", {}, speed === null ? "–" : `${speed.toFixed(1)} (${v.x.toFixed(1)}, ${v.y.toFixed(1)})`),
               el("td", {}, num(o.measured_age_s) ? `${o.measured_age_s.toFixed(1)} s ago` : "–"),
               el("td", {}, `${Math.round((o.confidence || 0) * 100)}%`),
               el("td", {}, Object.keys(o.pixel || {}).join(", ") || String(o.camera ?? "–")));
    return row;
  }));
}

function showTimelapses(status) {
  // The timelapse service's last renders, as /status carries them under health.timelapse.
  const renders = [];
  for (const [id, s] of Object.entries(status)) {
    const timelapse = (s.health && s.health.timelapse) || {};
    for (const r of timelapse.renders || []) renders.push({ ...r, camera: id });
  }
  renders.sort((a, b) => (b.finished || 0) - (a.finished || 0));
  const section = document.getElementById("timelapses");
  section.hidden = renders.length === 0;
  section.querySelector("tbody").replaceChildren(...renders.map((r) => {
    const row = el("tr");
    const when = r.finished ? new Date(r.finished * 1000).toLocaleString() : "–";
    const video = r.ok ? `${r.video} (${r.seconds} s)` : `not rendered: ${r.error || "unknown error"}`;
    row.append(el("td", {}, when), el("td", {}, String(r.print || r.print_id || "–")),
               el("td", {}, r.camera), el("td", {}, `${r.frames_taken} (${r.frames_skipped})`),
               el("td", {}, video));
    return row;
  }));
}

async function refresh() {
  try {
    const [cameras, status, model] = await Promise.all(
      ["/cameras", "/status", "/world"].map((p) => fetch(p, { cache: "no-store" }).then((r) => r.json())));
    world = model;
    const webcams = moonrakerWebcams(cameras, status, base());
    for (const [id, entry] of Object.entries(cameras)) {
      if (!tiles.has(id)) makeTile(id, entry, webcams[id]);
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
    showTimelapses(status);
    const objects = (world.objects || []).length;
    document.getElementById("summary").textContent =
      `${up}/${tiles.size} cameras live · ${objects} object${objects === 1 ? "" : "s"} in the world model`;
  } catch (err) {
    document.getElementById("summary").textContent = "gateway unreachable — retrying";
  }
  setTimeout(refresh, STATUS_PERIOD_MS);
}

refresh();
