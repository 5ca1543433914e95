// Moonraker webcam sections for moonraker.conf, exactly as `camfabric moonraker` prints them
// (camfabric/moonraker.py: the same names, keys and values), so that pasting the dashboard's
// block and registering with the command name each camera once. tests/gateway/
// test_dashboard_moonraker.py runs both on the same /cameras and /status and compares.
"use strict";

const MOONRAKER_SERVICE = "mjpegstreamer-adaptive";
const MOONRAKER_FPS = 15;

function gcd(a, b) { return b ? gcd(b, a % b) : a; }

function moonrakerAspect(width, height) {
  if (!(width > 0 && height > 0)) return "4:3";
  const g = gcd(width, height);
  return `${width / g}:${height / g}`;
}

function moonrakerCleanName(name) {
  // One line, no brackets, at most 64 characters: what fits in `[webcam NAME]`.
  return name.replace(/[[\]]/g, " ").split(/\s+/).filter(Boolean).join(" ").slice(0, 64);
}

// {id: {name, section}} for every camera of /cameras, with fps from /status where known.
function moonrakerWebcams(cameras, status, base) {
  const prefix = base.replace(/\/+$/, "") + "/";
  const result = {};
  const names = new Set();
  const ids = Object.keys(cameras).sort((a, b) => (Number(a) || 0) - (Number(b) || 0));
  for (const key of ids) {
    const entry = cameras[key] && typeof cameras[key] === "object" ? cameras[key] : {};
    const cam = Number(entry.id ?? key);
    let name = moonrakerCleanName(String(entry.name || "")) || `camera${cam}`;
    if (names.has(name)) name = `${name} ${cam}`;
    names.add(name);
    const [w, h] = (entry.resolution || [0, 0]).slice(0, 2);
    const fps = (status && status[String(cam)] || {}).fps;
    const target = typeof fps === "number" && fps >= 1 ? Math.round(fps) : MOONRAKER_FPS;
    const fields = [
      ["location", "printer"], ["service", MOONRAKER_SERVICE], ["target_fps", target],
      ["stream_url", `${prefix}?action=stream&cam=${cam}`],
      ["snapshot_url", `${prefix}?action=snapshot&cam=${cam}`],
      ["aspect_ratio", moonrakerAspect(Number(w) || 0, Number(h) || 0)],
      ["rotation", 0], ["flip_horizontal", "False"], ["flip_vertical", "False"],
    ];
    const section = [`[webcam ${name}]`, ...fields.map(([k, v]) => `${k}: ${v}`)].join("\n") + "\n";
    result[key] = { name, section };
  }
  return result;
}

if (typeof module !== "undefined") {
  module.exports = { moonrakerWebcams };
}
