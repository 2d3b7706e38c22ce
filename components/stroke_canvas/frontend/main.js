"use strict";
// A drawing surface that speaks Streamlit's custom-component protocol (API version 1) itself,
// so it needs no build step: it posts "streamlit:componentReady", "streamlit:setFrameHeight" and
// "streamlit:setComponentValue" to the parent page, and listens for "streamlit:render".
//
// The value it sends holds the whole drawing, never a delta: if Streamlit skips a rerun while
// the hand is quicker than the server, the next value still carries every stroke.

const surface = document.getElementById("surface");
const undoButton = document.getElementById("undo");
const clearButton = document.getElementById("clear");
const pen = surface.getContext("2d");

const INK = "#ffffff";
const PAPER = "#000000";

let size = surface.width; // canvas pixels per side: the PNG sent and the stroke points use them
let penWidth = 28;
let disabled = false;
let strokes = []; // [{width, points: [[x, y], ...]}] in canvas pixels
let active = null; // {pointerId, stroke} while the pen is down
let seq = 0; // grows with every value sent
let frameHeight = -1;

function post(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

function publish() {
  seq += 1;
  const value = {
    seq,
    size,
    strokes: strokes.map((stroke) => ({ width: stroke.width, points: stroke.points })),
    png: surface.toDataURL("image/png"),
  };
  post("streamlit:setComponentValue", { value, dataType: "json" });
  enableButtons();
}

function enableButtons() {
  undoButton.disabled = clearButton.disabled = disabled || strokes.length === 0;
}

// ------------------------------------------------------------------------------- painting

function paintDot(width, [x, y]) {
  pen.beginPath();
  pen.arc(x, y, width / 2, 0, 2 * Math.PI);
  pen.fill();
}

function paintSegment(width, [x0, y0], [x1, y1]) {
  pen.lineWidth = width;
  pen.beginPath();
  pen.moveTo(x0, y0);
  pen.lineTo(x1, y1);
  pen.stroke();
}

function repaint() {
  pen.fillStyle = PAPER;
  pen.fillRect(0, 0, size, size);
  pen.fillStyle = pen.strokeStyle = INK;
  pen.lineCap = pen.lineJoin = "round";
  for (const { width, points } of strokes) {
    paintDot(width, points[0]);
    for (let i = 1; i < points.length; i++) paintSegment(width, points[i - 1], points[i]);
  }
}

// -------------------------------------------------------------------------------- the pen

function canvasPoint(event) {
  // the surface may be shown smaller than its pixels (narrow screens): map CSS px to canvas px
  const box = surface.getBoundingClientRect();
  const scale = size / box.width;
  const round = (v) => Math.round(v * 10) / 10;
  return [round((event.clientX - box.left) * scale), round((event.clientY - box.top) * scale)];
}

function onSurface(event) {
  // Chromium hit-tests a touch at whole pixels: a finger on the surface's last column or row
  // (273.5 of 274 px) lands in the zone's margin beside it. Such a stroke is still ours.
  const box = surface.getBoundingClientRect();
  const [x, y] = [event.clientX, event.clientY];
  return x >= box.left && x < box.right + 1 && y >= box.top && y < box.bottom + 1;
}

function clampedPoint(event) {
  const last = size - 0.5;
  return canvasPoint(event).map((v) => Math.min(Math.max(v, 0), last));
}

const zone = document.getElementById("zone");
zone.addEventListener("pointerdown", (event) => {
  if (disabled || active || (event.pointerType === "mouse" && event.button !== 0)) return;
  if (!onSurface(event)) return;
  event.preventDefault();
  // capture: the stroke keeps its events, and its end, when the pen leaves the surface
  surface.setPointerCapture(event.pointerId);
  const stroke = { width: penWidth, points: [clampedPoint(event)] };
  strokes.push(stroke);
  active = { pointerId: event.pointerId, stroke };
  paintDot(stroke.width, stroke.points[0]);
});

surface.addEventListener("pointermove", (event) => {
  if (!active || event.pointerId !== active.pointerId) return;
  const { stroke } = active;
  // a quick hand: the browser may merge several moves into one event; keep every sample
  const samples = event.getCoalescedEvents?.() ?? [];
  for (const sample of samples.length ? samples : [event]) {
    const point = canvasPoint(sample);
    const last = stroke.points[stroke.points.length - 1];
    if (point[0] === last[0] && point[1] === last[1]) continue;
    stroke.points.push(point);
    paintSegment(stroke.width, last, point);
  }
});

function penUp(event) {
  if (!active || event.pointerId !== active.pointerId) return;
  active = null;
  publish(); // the moment the pen lifts: no debounce
}
surface.addEventListener("pointerup", penUp);
// a cancelled touch (the system took it) keeps what was drawn: the user saw it appear
surface.addEventListener("pointercancel", penUp);
surface.addEventListener("lostpointercapture", penUp);

undoButton.addEventListener("click", () => {
  if (active || strokes.length === 0) return;
  strokes.pop();
  repaint();
  publish();
});

clearButton.addEventListener("click", () => {
  if (active || strokes.length === 0) return;
  strokes = [];
  repaint();
  publish();
});

// ----------------------------------------------------------------------- Streamlit's side

function resize(newSize) {
  if (newSize === size) return;
  const scale = newSize / size;
  for (const stroke of strokes) {
    stroke.points = stroke.points.map(([x, y]) => [x * scale, y * scale]);
    stroke.width *= scale;
  }
  size = surface.width = surface.height = newSize;
  repaint();
}

function layout() {
  // Shrink to the frame's width on a narrow screen; never grow past the canvas' own pixels.
  // Short of the frame by the zone's margin and one pixel more: in a frame of fractional
  // width (Streamlit gives it its column's, e.g. 275.27 px) Chromium hit-tests no pointer on
  // the last column.
  const frameWidth = document.documentElement.getBoundingClientRect().width;
  const side = frameWidth > 1 ? Math.min(size, Math.floor(frameWidth) - 3) : size;
  surface.style.width = surface.style.height = `${side}px`;
  const height = Math.ceil(document.body.getBoundingClientRect().height);
  if (height !== frameHeight) {
    frameHeight = height;
    post("streamlit:setFrameHeight", { height });
  }
}

function applyTheme(theme) {
  if (!theme) return;
  const root = document.documentElement.style;
  if (theme.textColor) root.setProperty("--text", theme.textColor);
  if (theme.primaryColor) root.setProperty("--primary", theme.primaryColor);
  if (theme.backgroundColor) root.setProperty("--background", theme.backgroundColor);
  if (theme.font) root.setProperty("--font", theme.font);
}

window.addEventListener("message", (event) => {
  const message = event.data;
  if (event.source !== window.parent || message?.type !== "streamlit:render") return;
  const args = message.args ?? {};
  if (Number.isFinite(args.size) && args.size > 0) resize(Math.round(args.size));
  if (Number.isFinite(args.stroke_width) && args.stroke_width > 0) penWidth = args.stroke_width;
  disabled = Boolean(message.disabled);
  enableButtons();
  applyTheme(message.theme);
  layout();
});

window.addEventListener("resize", layout);

repaint();
post("streamlit:componentReady", { apiVersion: 1 });
layout();
