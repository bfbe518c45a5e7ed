// Region editor for RegionPrompt nodes: a small picture of the canvas on the node, where the
// region box is dragged and resized with the mouse. The box lives in the node's own x / y / width /
// height widgets (fractions of the canvas); this editor only reads and writes them, so a workflow
// saves, loads and queues exactly as without it.
//
// It is a DOM widget, so it works with both ways the frontend draws nodes: the classic LiteGraph
// canvas (the element lies over the canvas, and the graph calls onDraw as it draws the node) and
// Nodes 2.0 (Vue nodes: the element is mounted inside the node's own DOM, and the graph canvas no
// longer draws the node, so onDraw never comes). Nothing here asks which one is on.
import { app } from "../../scripts/app.js";

const NODE_CLASS = "ExpanseRegionPrompt";
const EDITOR = "region_editor"; // the DOM widget's name; must not be one of the node's input names
const BOX = ["x", "y", "width", "height"];
const MIN_SIZE = 0.02; // fractions of the canvas: a smaller box could no longer be grabbed
const GRAB = 6; // CSS px either side of an edge that grabs the edge instead of the inside
const PAD = 8; // CSS px around the canvas picture, so edge handles stay reachable
const COLORS = {
  foreground: { fill: "rgba(255,150,40,0.22)", core: "rgba(255,150,40,0.38)", line: "#ffa040" },
  background: { fill: "rgba(70,150,255,0.20)", core: "rgba(70,150,255,0.34)", line: "#5aa0ff" },
};

const widgetOf = (node, name) => node.widgets?.find((w) => w.name === name);

function numberOf(node, name, fallback) {
  const v = Number(widgetOf(node, name)?.value);
  return Number.isFinite(v) ? v : fallback;
}

function readBox(node) {
  return {
    x: numberOf(node, "x", 0.25),
    y: numberOf(node, "y", 0.25),
    width: numberOf(node, "width", 0.5),
    height: numberOf(node, "height", 0.5),
  };
}

// The regions earlier in the chain: RegionPrompts feed each other through `conditioning`, so
// follow that input upstream for as long as it comes from another RegionPrompt.
function upstreamRegions(node) {
  const found = [];
  const seen = new Set([node.id]);
  for (let cur = node; ; ) {
    const slot = cur.findInputSlot?.("conditioning") ?? -1;
    const up = slot >= 0 ? cur.getInputNode(slot) : null;
    if (!up || up.comfyClass !== NODE_CLASS || seen.has(up.id)) return found;
    seen.add(up.id);
    found.push({ ...readBox(up), feather: numberOf(up, "feather", 0) });
    cur = up;
  }
}

// The step the box snaps to. The frontend's float widget callback rounds to options.round and
// then again to options.precision decimals (frontend 1.32), so a finer value we wrote would be
// moved by the callback; snapping to the coarser of the two keeps what we draw and what is stored
// the same. Never finer than 3 decimals.
function quantumOf(node) {
  const o = widgetOf(node, "x")?.options ?? {};
  const byPrecision = Number.isInteger(o.precision) ? 10 ** -o.precision : 0;
  return Math.max(o.round || 0, byPrecision, 0.001);
}

// The picture of the canvas inside the element: canvas_width:canvas_height, centred.
function pageRect(node, w, h) {
  const aspect = Math.max(1, numberOf(node, "canvas_width", 1024)) / Math.max(1, numberOf(node, "canvas_height", 1024));
  const aw = Math.max(1, w - 2 * PAD);
  const ah = Math.max(1, h - 2 * PAD);
  const pw = Math.min(aw, ah * aspect);
  const ph = pw / aspect;
  return { left: (w - pw) / 2, top: (h - ph) / 2, width: pw, height: ph };
}

// Where on the box the pointer is: "move", a combination of n/s/e/w for edges and corners, or null.
function hitTest(box, page, px, py) {
  const l = page.left + box.x * page.width;
  const t = page.top + box.y * page.height;
  const r = l + box.width * page.width;
  const b = t + box.height * page.height;
  if (px < l - GRAB || px > r + GRAB || py < t - GRAB || py > b + GRAB) return null;
  let edges = "";
  if (Math.abs(py - t) <= GRAB) edges += "n";
  else if (Math.abs(py - b) <= GRAB) edges += "s";
  if (Math.abs(px - l) <= GRAB) edges += "w";
  else if (Math.abs(px - r) <= GRAB) edges += "e";
  return edges || (px > l && px < r && py > t && py < b ? "move" : null);
}

const CURSORS = { move: "move", n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize",
  nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize" };

// The box after dragging `mode` by (dx, dy) canvas fractions from `start`, on the snapping grid of
// `q`, inside the canvas and no smaller than MIN_SIZE. Computed as integer grid steps so that
// x + width never passes 1 through rounding (the node refuses such a box).
function dragBox(start, mode, dx, dy, q) {
  const n = Math.round(1 / q);
  const min = Math.max(1, Math.ceil(MIN_SIZE * n));
  const axis = (pos, size, d, lowEdge, highEdge) => {
    let lo = Math.round(pos * n);
    let hi = Math.round((pos + size) * n);
    if (mode === "move") {
      const span = Math.min(n, Math.max(min, hi - lo));
      lo = Math.min(Math.max(Math.round((pos + d) * n), 0), n - span);
      return [lo / n, span / n];
    }
    if (mode.includes(lowEdge)) lo = Math.min(Math.max(Math.round((pos + d) * n), 0), hi - min);
    if (mode.includes(highEdge)) hi = Math.max(Math.min(Math.round((pos + size + d) * n), n), lo + min);
    return [lo / n, (hi - lo) / n];
  };
  const [x, width] = axis(start.x, start.width, dx, "w", "e");
  const [y, height] = axis(start.y, start.height, dy, "n", "s");
  return { x, y, width, height };
}

// Writes the box through each widget's own setValue when it has one (the path a user's edit
// takes: callback, onWidgetChanged and the graph's change counter), else value + callback.
function writeBox(node, box, event) {
  for (const name of BOX) {
    const w = widgetOf(node, name);
    const v = Math.round(box[name] * 1000) / 1000; // drop float noise such as 0.30000000000000004
    if (!w || w.value === v) continue;
    if (typeof w.setValue === "function") w.setValue(v, { e: event, node, canvas: app.canvas });
    else {
      w.value = v;
      w.callback?.(v, app.canvas, node, app.canvas?.graph_mouse, event);
    }
  }
  node.setDirtyCanvas(true, true);
  app.graph?.setDirtyCanvas(true, true);
}

function paint(node, canvas, state) {
  const dpr = window.devicePixelRatio || 1;
  // Backing store at the on-screen size (the DOM widget is CSS-scaled with the graph's zoom).
  const zoom = app.canvas?.ds?.scale ?? 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const bw = Math.max(1, Math.round(w * dpr * zoom));
  const bh = Math.max(1, Math.round(h * dpr * zoom));
  if (canvas.width !== bw || canvas.height !== bh) Object.assign(canvas, { width: bw, height: bh });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(bw / Math.max(1, w), 0, 0, bh / Math.max(1, h), 0, 0);
  ctx.clearRect(0, 0, w, h);

  const page = pageRect(node, w, h);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(page.left, page.top, page.width, page.height);
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.strokeRect(page.left + 0.5, page.top + 0.5, page.width - 1, page.height - 1);
  const rect = (b) => [page.left + b.x * page.width, page.top + b.y * page.height,
    b.width * page.width, b.height * page.height];

  // Earlier regions of the chain, faded: context for placing this one, not editable here.
  ctx.setLineDash([3, 3]);
  for (const other of state.others) {
    ctx.fillStyle = "rgba(255,255,255,0.07)";
    ctx.fillRect(...rect(other));
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.strokeRect(...rect(other));
  }
  ctx.setLineDash([]);

  const box = state.box;
  const colors = COLORS[state.type] ?? COLORS.foreground;
  const [bx, by, bwid, bhei] = rect(box);
  ctx.fillStyle = colors.fill;
  ctx.fillRect(bx, by, bwid, bhei);
  // The feather as the node computes it (core/regions.py): a ramp of feather x half the smaller
  // side inward from each edge, except edges on the canvas border, which stay hard. The inner
  // rectangle is where the region is at full strength.
  const ramp = state.feather * Math.min(bwid, bhei) / 2;
  const soft = { l: box.x > 0, t: box.y > 0, r: box.x + box.width < 1, b: box.y + box.height < 1 };
  const il = bx + (soft.l ? ramp : 0);
  const it = by + (soft.t ? ramp : 0);
  const iw = Math.max(0, bx + bwid - (soft.r ? ramp : 0) - il);
  const ih = Math.max(0, by + bhei - (soft.b ? ramp : 0) - it);
  ctx.fillStyle = colors.core;
  ctx.fillRect(il, it, iw, ih);
  ctx.strokeStyle = colors.line;
  if (ramp > 1) {
    ctx.setLineDash([4, 3]);
    ctx.strokeRect(il + 0.5, it + 0.5, Math.max(0, iw - 1), Math.max(0, ih - 1));
    ctx.setLineDash([]);
  }
  ctx.lineWidth = 1.5;
  ctx.strokeRect(bx, by, bwid, bhei);
  // Corner handles, so resizing is discoverable.
  ctx.fillStyle = colors.line;
  for (const [cx, cy] of [[bx, by], [bx + bwid, by], [bx, by + bhei], [bx + bwid, by + bhei]]) {
    ctx.fillRect(cx - 3, cy - 3, 6, 6);
  }
  // The box in canvas pixels, which is what users think in.
  const cw = numberOf(node, "canvas_width", 1024);
  const ch = numberOf(node, "canvas_height", 1024);
  ctx.fillStyle = "#ccc";
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "bottom";
  ctx.fillText(`${Math.round(box.width * cw)}×${Math.round(box.height * ch)} at ` +
    `${Math.round(box.x * cw)},${Math.round(box.y * ch)}`, page.left + 3, page.top + page.height - 2);

  // What was drawn, readable from the page (tests, debugging): the box and the picture's place.
  canvas.dataset.box = JSON.stringify(box);
  canvas.dataset.page = JSON.stringify(page);
  canvas.dataset.others = String(state.others.length);
}

// The editors on live nodes, each a refresh function. Every animation frame each one repaints if
// something it shows changed: refresh compares a small key first, so an unchanged editor costs one
// JSON.stringify. The classic canvas also calls onDraw as it draws the node, but Nodes 2.0 draws
// nodes in the DOM and never does, and nothing else tells an editor that a widget's value, an
// upstream region or its own size (the element is laid out some frames after it is mounted) changed.
const live = new Set();
let watching = false;

// The elements of removed nodes' editors still in the page, by graph and node id. When a graph is
// loaded again (undo, opening a workflow), a node with the same id replaces each node; some
// frontends (Nodes 2.0 of frontend 1.32) keep the old node's element mounted in the node's place
// and never mount the new one's. The new editor then moves its own element into the old one (see
// adopt).
const retired = new Map(); // graph -> Map(node id -> element)

function watch() {
  if (watching) return;
  watching = true;
  const tick = () => {
    for (const refresh of live) {
      try {
        refresh(false);
      } catch (error) {
        live.delete(refresh); // reported once, not on every frame
        console.error("[expanse] region editor:", error);
      }
    }
    for (const [graph, elements] of retired) {
      for (const [id, element] of elements) if (!element.isConnected) elements.delete(id);
      if (!elements.size) retired.delete(graph);
    }
    if (live.size) requestAnimationFrame(tick);
    else watching = false;
  };
  requestAnimationFrame(tick);
}

// Chains fn after the node's own method of that name (the class's or another extension's).
function chain(node, name, fn) {
  const before = node[name];
  node[name] = function (...args) {
    const result = before?.apply(this, args);
    fn();
    return result;
  };
}

function addEditor(node) {
  const element = document.createElement("div");
  element.style.cssText = "width:100%;height:100%;user-select:none;"; // a drag must not select page text
  const canvas = document.createElement("canvas");
  canvas.className = "expanse-region-editor";
  // touch-action none: a touch drag moves the box instead of scrolling the page.
  canvas.style.cssText = "display:block;width:100%;height:100%;touch-action:none;cursor:default;";
  element.appendChild(canvas);

  let drag = null; // while dragging: what is dragged, the box and pointer at the start, the grid
  let drawnKey = "";

  const state = () => ({
    box: readBox(node), // what is stored, so the picture never disagrees with the widgets
    type: widgetOf(node, "type")?.value,
    feather: Math.min(1, Math.max(0, numberOf(node, "feather", 0))),
    others: upstreamRegions(node),
  });

  // Repaints only when something it shows changed: called on every animation frame (see watch)
  // and whenever the classic canvas draws the node, which catches hand-edited widgets, relinked
  // chains, upstream edits and a new layout, with no callbacks to chain onto widgets that other
  // extensions may wrap too.
  const refresh = (force) => {
    if (!canvas.isConnected) adopt();
    if (!canvas.isConnected || canvas.clientWidth === 0 || canvas.clientHeight === 0) return;
    const s = state();
    const key = JSON.stringify([s, canvas.clientWidth, canvas.clientHeight, app.canvas?.ds?.scale,
      numberOf(node, "canvas_width", 0), numberOf(node, "canvas_height", 0)]);
    if (!force && key === drawnKey) return;
    drawnKey = key;
    paint(node, canvas, s);
  };

  // Not in the page while the removed node this one replaced still shows its editor there: takes
  // that place. Harmless where the frontend mounts the new element after all: mounting moves it.
  const adopt = () => {
    const elements = retired.get(node.graph);
    const stale = elements?.get(String(node.id));
    if (!stale?.isConnected || stale === element) return;
    elements.delete(String(node.id));
    stale.replaceChildren(element);
  };

  // Pointer position in the element's own CSS px (its box on screen is scaled with the zoom).
  const local = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.clientWidth / r.width, (e.clientY - r.top) * canvas.clientHeight / r.height];
  };

  // The pointer events of a drag stop here. In the classic canvas the DOM widget lies over the graph
  // canvas, not in it, so the graph never sees them anyway; in Nodes 2.0 the editor is inside the
  // node's element, which would otherwise take the drag for a move of the whole node. No
  // preventDefault: it would swallow the mouseup on which ComfyUI's change tracker records an undo
  // step (a window listener for mouseup, which pointer events' stopPropagation leaves alone).
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || drag) return;
    const page = pageRect(node, canvas.clientWidth, canvas.clientHeight);
    const [px, py] = local(e);
    const mode = hitTest(readBox(node), page, px, py);
    if (!mode) return; // not on the box: the event goes on to the node or the graph
    e.stopPropagation();
    // Capture keeps the drag going when the pointer leaves the editor.
    canvas.setPointerCapture(e.pointerId);
    drag = { mode, start: readBox(node), px, py, page, q: quantumOf(node), id: e.pointerId };
    canvas.dataset.drag = mode; // what is being dragged, readable from the page (tests, debugging)
  });
  canvas.addEventListener("pointermove", (e) => {
    const [px, py] = local(e);
    if (!drag) {
      const mode = hitTest(readBox(node), pageRect(node, canvas.clientWidth, canvas.clientHeight), px, py);
      canvas.style.cursor = CURSORS[mode] ?? "default";
      return;
    }
    if (e.pointerId !== drag.id) return;
    e.stopPropagation();
    const dx = (px - drag.px) / drag.page.width;
    const dy = (py - drag.py) / drag.page.height;
    writeBox(node, dragBox(drag.start, drag.mode, dx, dy, drag.q), e);
    refresh();
  });
  const end = (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    if (e.type !== "lostpointercapture") e.stopPropagation();
    drag = null;
    delete canvas.dataset.drag;
    if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
    refresh(true);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  // The capture is lost without a pointerup when the element is taken out of the page mid-drag
  // (Nodes 2.0 remounts it, the node is removed).
  canvas.addEventListener("lostpointercapture", end);

  // Added after the node's own widgets: LGraphNode.serialize keeps widget indices (a widget
  // skipped in the middle would leave a hole) while configure counts only serialised widgets, so
  // a non-serialised widget is safe only at the end.
  const widget = node.addDOMWidget(EDITOR, "expanse-region-editor", element, {
    serialize: false, // keeps it out of the API prompt (graphToPrompt reads options.serialize)
    hideOnZoom: true,
    getMinHeight: () => 200,
    onDraw: () => refresh(false),
  });
  widget.serialize = false; // keeps it out of widgets_values (LGraphNode.serialize reads widget.serialize)
  // Room for the picture on a fresh node; a loaded workflow brings its own size afterwards.
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], 320), Math.max(node.size[1], size[1])]);

  // Watched from now (the node is added to the graph right after nodeCreated) until it is removed;
  // graph.clear, as loading a workflow or undo does, removes every node this way too.
  live.add(refresh);
  watch();
  chain(node, "onRemoved", () => {
    live.delete(refresh);
    if (!element.isConnected || !node.graph || node.id == null) return;
    if (!retired.has(node.graph)) retired.set(node.graph, new Map());
    retired.get(node.graph).set(String(node.id), element);
  });
  chain(node, "onAdded", () => {
    live.add(refresh);
    watch();
  });
}

app.registerExtension({
  name: "expanse.RegionEditor",
  nodeCreated(node) {
    if (node.comfyClass === NODE_CLASS) addEditor(node);
  },
});
