// Live dashboard: every camera polled through /latest/{id} (self-paced, so it never holds an
// MJPEG stream slot), with frame age (X-Frame-Age-Ms), fps, connection state from /status,
// and the world model's objects drawn at their pixel positions from /world.
"use strict";

const tiles = new Map();   // camera id -> tile state
let world = { objects: [] };

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function makeTile(id, entry) {
  const tile = el("div", { class: "tile" });
  const view = el("div", { class: "view" });
  const img = el("img", { alt: `camera ${id}` });
  const canvas = el("canvas");
  view.append(img, canvas);
  const info = el("div", { class: "info" });
  const name = el("span", { class: "name" }, `${id} · ${entry.name || "camera"} (${entry.role || "?"})`);
  const state = el("span", {}, "…");
  const age = el("span", {}, "age –");
  const fps = el("span", {}, "– fps");
  const stream = el("a", { href: `/cam/${id}`, target: "_blank" }, "MJPEG");
  info.append(name, state, age, fps, stream);
  tile.append(view, info);
  document.getElementById("cameras").append(tile);
  const t = { id, img, canvas, state, age, fps, url: null, stamps: [], lastStamp: null, period: 66 };
  img.addEventListener("load", () => drawOverlay(t));
  tiles.set(id, t);
  poll(t);
}

async function poll(t) {
  let wait = t.period;
  try {
    const resp = await fetch(`/latest/${t.id}?cacheBust=${Date.now()}`, { cache: "no-store" });
    if (resp.ok) {
      const stamp = resp.headers.get("X-Timestamp");
      t.age.textContent = `age ${resp.headers.get("X-Frame-Age-Ms")} ms`;
      const blob = await resp.blob();
      if (stamp !== t.lastStamp) {
        t.lastStamp = stamp;
        const now = performance.now();
        t.stamps.push(now);
        while (t.stamps.length && now - t.stamps[0] > 2000) t.stamps.shift();
        const span = (t.stamps[t.stamps.length - 1] - t.stamps[0]) / 1000;
        t.fps.textContent = span > 0 ? `${((t.stamps.length - 1) / span).toFixed(1)} fps` : "– fps";
        const url = URL.createObjectURL(blob);
        if (t.url) URL.revokeObjectURL(t.url);
        t.url = url;
        t.img.src = url;
      }
    } else {
      t.age.textContent = resp.status === 503 ? "waiting for the first frame" : `HTTP ${resp.status}`;
      wait = 1000;
    }
  } catch (err) {
    t.age.textContent = "gateway unreachable";
    wait = 2000;
  }
  setTimeout(() => poll(t), wait);
}

function drawOverlay(t) {
  const { canvas, img } = t;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!img.naturalWidth) return;
  // The image is letterboxed by object-fit: contain; map image pixels into the canvas.
  const scale = Math.min(w / img.naturalWidth, h / img.naturalHeight);
  const ox = (w - img.naturalWidth * scale) / 2, oy = (h - img.naturalHeight * scale) / 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const obj of world.objects || []) {
    const px = obj.pixel && obj.pixel[String(t.id)];
    if (!px) continue;
    const x = ox + px[0] * scale, y = oy + px[1] * scale;
    ctx.strokeStyle = obj.stale ? "#fc4" : "#6d6";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, 10, 0, 2 * Math.PI); ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(`${obj.label || obj.id} ${Math.round((obj.confidence || 0) * 100)}%`, x + 13, y + 4);
  }
}

async function refresh() {
  try {
    const [cameras, status, model] = await Promise.all(
      ["/cameras", "/status", "/world"].map((p) => fetch(p, { cache: "no-store" }).then((r) => r.json())));
    world = model;
    for (const [id, entry] of Object.entries(cameras)) {
      if (!tiles.has(id)) makeTile(id, entry);
    }
    document.getElementById("empty").style.display = tiles.size ? "none" : "block";
    let up = 0;
    for (const [id, t] of tiles) {
      const s = status[id];
      if (!s) continue;
      if (s.connected) up += 1;
      t.period = Math.max(30, Math.min(500, 500 / (s.fps || 15)));  // twice the camera rate
      if (s.duplicate) {
        t.state.className = "warn";
        t.state.textContent = `claimed by ${s.duplicate.nodes.join(", ")}`;
      } else {
        t.state.className = s.connected ? "ok" : "bad";
        t.state.textContent = `${s.connected ? "connected" : "disconnected"} · ${s.node} · ${s.width}×${s.height}`;
      }
      drawOverlay(t);
    }
    const objects = (world.objects || []).length;
    document.getElementById("summary").textContent =
      `${up}/${tiles.size} cameras connected · ${objects} object${objects === 1 ? "" : "s"} in the world model`;
  } catch (err) {
    document.getElementById("summary").textContent = "gateway unreachable";
  }
  setTimeout(refresh, 1000);
}

refresh();
