// Region editor for RegionPrompt nodes: a small picture of the canvas on the node, where the
// region box is drawn, dragged and resized with the mouse. The box lives in the node's own x / y /
// width / height widgets (fractions of the canvas); this editor only reads and writes them, so a
// workflow saves, loads and queues exactly as without it.
//
// Around the box it shows what the graph says: every other region that reaches the same sampler
// (labelled with its prompt's first words, coloured by type), the canvas shape of the latent that
// sampler draws on, with a warning when the node's own canvas size differs, and under them the
// picture where the graph has one (the image the sampler redraws, or its last result).
//
// It is a DOM widget, so it works with both ways the frontend draws nodes: the classic LiteGraph
// canvas (the element lies over the canvas, and the graph calls onDraw as it draws the node) and
// Nodes 2.0 (Vue nodes: the element is mounted inside the node's own DOM, and the graph canvas no
// longer draws the node, so onDraw never comes). Nothing here asks which one is on.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

const NODE_CLASS = "ExpanseRegionPrompt";
const EDITOR = "region_editor"; // the DOM widget's name; must not be one of the node's input names
const BOX = ["x", "y", "width", "height"];
const MIN_SIZE = 0.02; // fractions of the canvas: a smaller box could no longer be grabbed
const GRAB = 6; // CSS px either side of an edge that grabs the edge instead of the inside
const PAD = 8; // CSS px around the canvas picture, so edge handles stay reachable
const LINE = 14; // CSS px of a text line outside the picture: the size below it, a warning above it
const DRAW_AFTER = 4; // CSS px the pointer must travel before a press on empty canvas draws a box
const PICTURE_ALPHA = 0.6; // the picture under the boxes, dimmed
const DEFAULT_CANVAS = { width: 1024, height: 1024 };
const COLORS = {
  foreground: { fill: "rgba(255,150,40,0.22)", core: "rgba(255,150,40,0.38)", faint: "rgba(255,150,40,0.10)",
    line: "#ffa040" },
  background: { fill: "rgba(70,150,255,0.20)", core: "rgba(70,150,255,0.34)", faint: "rgba(70,150,255,0.10)",
    line: "#5aa0ff" },
};
const WARNING_COLOR = "#ffcc33";

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

const isRegion = (node) => node?.comfyClass === NODE_CLASS;

// ---- What the graph says --------------------------------------------------------------------------
// Walked on every repaint check (graphs are small; each walk guards against cycles with a seen set).
// Only links are followed, never node classes, except RegionPrompt itself: any node that passes
// conditioning on (Conditioning Combine, Set Area, ControlNet, a legacy Reroute) is walked through.

const passesConditioning = (slot) => slot?.type === "CONDITIONING" || slot?.type === "*"; // "*": a Reroute
const hasLatentInput = (node) => !!node.inputs?.some((input) => input.type === "LATENT");

// The nodes fed by the node's outputs that pass `test`.
function consumers(node, test) {
  const found = [];
  node.outputs?.forEach((output, slot) => {
    if (test(output)) found.push(...(node.getOutputNodes(slot) ?? []));
  });
  return found;
}

// The nodes feeding the node's linked inputs that pass `test`.
function suppliers(node, test) {
  const found = [];
  node.inputs?.forEach((input, slot) => {
    const up = input.link != null && test(input) ? node.getInputNode(slot) : null;
    if (up) found.push(up);
  });
  return found;
}

// Where this node's conditioning ends up: walking its CONDITIONING outputs downstream, a sampler-like
// node (one that takes a LATENT: KSampler, ProgressiveGrowSampler, ...) or a node whose conditioning
// goes no further (an unlinked chain, a guider). Regions drawn together are the ones that meet there.
function chainEnds(start) {
  const ends = [];
  const seen = new Set([start.id]);
  const queue = [start];
  while (queue.length) {
    const node = queue.shift();
    const next = hasLatentInput(node) ? [] : consumers(node, passesConditioning);
    if (!next.length) ends.push(node);
    for (const n of next) {
      if (!seen.has(n.id)) {
        seen.add(n.id);
        queue.push(n);
      }
    }
  }
  return ends.length ? ends : [start]; // a cycle with no way out: the node's own chain
}

// Every RegionPrompt upstream of the ends through conditioning inputs: the chains into positive and
// negative, through Conditioning Combine and anything else. A region's region_conditioning is its own
// prompt (what it draws), not a chain of regions, so it is not walked.
function regionsReaching(ends) {
  const found = [];
  const seen = new Set();
  const stack = [...ends];
  while (stack.length) {
    const node = stack.pop();
    if (seen.has(node.id)) continue;
    seen.add(node.id);
    if (isRegion(node)) found.push(node);
    stack.push(...suppliers(node, (input) => passesConditioning(input) &&
      !(isRegion(node) && input.name === "region_conditioning")));
  }
  return found;
}

// The prompt text a node holds: its `text` widget (CLIP Text Encode), else any string widget that is
// not a list of choices.
function promptText(node) {
  const strings = (node.widgets ?? []).filter((w) => typeof w.value === "string" && w.value.trim() &&
    !Array.isArray(w.options?.values) && w.name !== EDITOR);
  return (strings.find((w) => w.name === "text") ?? strings[0])?.value.trim() ?? "";
}

function firstWords(text, count = 4) {
  const words = text.split(/\s+/);
  const head = words.slice(0, count).join(" ").replace(/[,;:.]+$/, "");
  return words.length > count ? `${head}…` : head;
}

// A region's label: the first words of the prompt feeding its region_conditioning (a few links up,
// through e.g. a timestep range or a string primitive), else the node's title.
function regionLabel(region) {
  const slot = region.findInputSlot?.("region_conditioning") ?? -1;
  let frontier = slot >= 0 && region.inputs[slot].link != null ? [region.getInputNode(slot)] : [];
  const seen = new Set();
  for (let hop = 0; hop < 3 && frontier.length; hop++) {
    const next = [];
    for (const node of frontier) {
      if (!node || seen.has(node.id)) continue;
      seen.add(node.id);
      const text = promptText(node);
      if (text) return firstWords(text);
      next.push(...suppliers(node, (input) => passesConditioning(input) || input.type === "STRING"));
    }
    frontier = next;
  }
  return region.title || "region";
}

// The size in pixels of the latent a node gives: an Empty Latent Image-like node says it in numeric
// width and height widgets (at least 8: pixels, not fractions); a sampler keeps the size of the
// latent on its `latent_image` input (the name samplers give it), so a refiner sampler is looked
// through to its base one. Resizing nodes without width/height widgets end the search (null).
function latentSize(node, seen = new Set()) {
  if (!node || seen.has(node.id)) return null;
  seen.add(node.id);
  const width = numberOf(node, "width", 0);
  const height = numberOf(node, "height", 0);
  if (width >= 8 && height >= 8) return { width, height, from: node.title || node.type };
  const slot = node.findInputSlot?.("latent_image") ?? -1;
  return slot >= 0 ? latentSize(node.getInputNode(slot), seen) : null;
}

// The nodes that may sample the chain, nearest first: each end (the sampler the chain reaches), and
// what each end feeds (a guider into SamplerCustomAdvanced).
function samplersOf(ends) {
  return ends.flatMap((end) => [end, ...consumers(end, () => true)]);
}

// The canvas the chain is sampled on, where the graph says it: the latent_image of its sampler.
function sampledCanvas(ends) {
  for (const sampler of samplersOf(ends)) {
    const slot = sampler.findInputSlot?.("latent_image") ?? -1;
    const size = slot >= 0 ? latentSize(sampler.getInputNode(slot)) : null;
    if (size) return size;
  }
  return null;
}

// A picture a node shows (Load Image's preview, Save or Preview Image's last result, a sampler's
// preview). The frontends keep it in node.imgs once they have drawn the node, so a node off screen
// has none there yet; its last output's first image (app.nodeOutputs) is loaded here instead.
function shownPicture(node) {
  const img = node?.imgs?.[node.imageIndex ?? 0] ?? node?.imgs?.[0];
  if (img?.complete && img.naturalWidth > 0) return img;
  return node ? outputPicture(node) : null;
}

const outputPictures = new Map(); // URL -> the Image loading or loaded from it; the latest few
const KEEP_OUTPUT_PICTURES = 16;

function outputPicture(node) {
  const image = app.nodeOutputs?.[String(node.id)]?.images?.[0];
  if (!image?.filename) return null;
  const query = new URLSearchParams({ filename: image.filename, type: image.type ?? "output",
    subfolder: image.subfolder ?? "" });
  const url = api.apiURL(`/view?${query}`);
  let img = outputPictures.get(url);
  if (!img) {
    img = new Image();
    img.src = url;
    outputPictures.set(url, img);
    if (outputPictures.size > KEEP_OUTPUT_PICTURES) outputPictures.delete(outputPictures.keys().next().value);
  }
  return img.complete && img.naturalWidth > 0 ? img : null;
}

// The first node within `hops` steps from `start` (not counting it) along `next` that shows a picture.
function pictureAlong(start, next, hops = 3) {
  let frontier = [start];
  const seen = new Set([start.id]);
  for (let hop = 0; hop < hops && frontier.length; hop++) {
    const ahead = [];
    for (const node of frontier) {
      for (const n of next(node)) {
        if (seen.has(n.id)) continue;
        seen.add(n.id);
        if (shownPicture(n)) return n;
        ahead.push(n);
      }
    }
    frontier = ahead;
  }
  return null;
}

// The picture to show under the boxes, where the graph has one: the image given to the sampler the
// chain feeds (Load Image into Chess Tile Redraw), else the latest picture shown after it (its
// decode's Save or Preview Image) or on it. Null where there is none yet.
function pictureOf(ends) {
  for (const sampler of samplersOf(ends)) {
    const from = pictureAlong(sampler, (n) => suppliers(n, (input) => input.type === "IMAGE")) ??
      pictureAlong(sampler, (n) => consumers(n, () => true)) ?? (shownPicture(sampler) ? sampler : null);
    if (!from) continue;
    const img = shownPicture(from);
    const picture = { from: from.title || from.type, width: img.naturalWidth, height: img.naturalHeight,
      src: img.src.slice(0, 160) };
    Object.defineProperty(picture, "element", { value: img, enumerable: false }); // drawn, not compared
    return picture;
  }
  return null;
}

// The node's own canvas size widgets (the node measures the feather on them), null without them.
function ownCanvas(node) {
  if (!widgetOf(node, "canvas_width") || !widgetOf(node, "canvas_height")) return null;
  return { width: numberOf(node, "canvas_width", 1024), height: numberOf(node, "canvas_height", 1024) };
}

// The canvas to show: the graph's where it says one, else the node's own. The node measures the
// feather on its own size (its aspect ratio shapes the mask), so a difference is shown as a warning;
// the editor keeps working on the graph's shape, the one the picture is drawn on.
function canvasOf(node, ends) {
  const sampled = sampledCanvas(ends);
  const own = ownCanvas(node);
  const size = sampled ?? own ?? DEFAULT_CANVAS;
  const differs = sampled && own && (sampled.width !== own.width || sampled.height !== own.height);
  const ownSize = differs && `${own.width}×${own.height}`;
  const sampledSize = differs && `${sampled.width}×${sampled.height}`;
  return {
    width: size.width,
    height: size.height,
    source: sampled ? "latent" : own ? "node" : "default",
    // The line on the editor, short enough for a small node; the whole sentence on hover.
    warningLine: differs ? `⚠ canvas_width/height ${ownSize} ≠ latent ${sampledSize}` : "",
    warning: differs ? `canvas_width × canvas_height is ${ownSize}, but the latent this region is sampled on ` +
      `(${sampled.from}) is ${sampledSize}: the node measures the feather on ${ownSize}. ` +
      `Set canvas_width and canvas_height to ${sampledSize}.` : "",
  };
}

// Another region as the editor shows it.
function regionView(node) {
  return { id: String(node.id), ...readBox(node), type: widgetOf(node, "type")?.value ?? "foreground",
    label: regionLabel(node) };
}

// Everything the picture shows besides the node's own box.
function graphView(node) {
  const ends = chainEnds(node);
  return { others: regionsReaching(ends).filter((r) => r !== node).map(regionView), canvas: canvasOf(node, ends),
    picture: pictureOf(ends) };
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

// The picture of the canvas inside the element: the canvas's aspect ratio, centred, with a line
// below it for the size and, when there is a warning, one above it. Text outside the picture never
// covers the box's handles, wherever the box is.
function pageRect(canvas, w, h) {
  const aspect = Math.max(1, canvas.width) / Math.max(1, canvas.height);
  const top = PAD + (canvas.warning ? LINE : 0);
  const aw = Math.max(1, w - 2 * PAD);
  const ah = Math.max(1, h - top - PAD - LINE);
  const pw = Math.min(aw, ah * aspect);
  const ph = pw / aspect;
  return { left: (w - pw) / 2, top: top + (ah - ph) / 2, width: pw, height: ph };
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

const CURSORS = { draw: "crosshair", move: "move", n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize",
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

// The box spanned from `anchor` to `point` (canvas fractions) on the snapping grid of `q`, inside the
// canvas; too small a span grows to MIN_SIZE in the direction of the drag.
function drawnBox(anchor, point, q) {
  const n = Math.round(1 / q);
  const min = Math.max(1, Math.ceil(MIN_SIZE * n));
  const axis = (a, p) => {
    const ga = Math.min(Math.max(Math.round(a * n), 0), n);
    const gp = Math.min(Math.max(Math.round(p * n), 0), n);
    let lo = Math.min(ga, gp);
    let hi = Math.max(ga, gp);
    if (hi - lo < min) {
      if (gp >= ga) hi = lo + min;
      else lo = hi - min;
      if (hi > n) [lo, hi] = [n - min, n];
      if (lo < 0) [lo, hi] = [0, min];
    }
    return [lo / n, (hi - lo) / n];
  };
  const [x, width] = axis(anchor.x, point.x);
  const [y, height] = axis(anchor.y, point.y);
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

// A backing store at the on-screen size (the DOM widget is CSS-scaled with the graph's zoom), and a
// context that draws in the element's CSS px.
function context2d(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const zoom = app.canvas?.ds?.scale ?? 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const bw = Math.max(1, Math.round(w * dpr * zoom));
  const bh = Math.max(1, Math.round(h * dpr * zoom));
  if (canvas.width !== bw || canvas.height !== bh) Object.assign(canvas, { width: bw, height: bh });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(bw / Math.max(1, w), 0, 0, bh / Math.max(1, h), 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "10px sans-serif";
  return ctx;
}

// text cut to fit `room` px, with an ellipsis; "" when not even two characters fit.
function fitText(ctx, text, room) {
  if (ctx.measureText(text).width <= room) return text;
  for (let n = text.length - 1; n >= 2; n--) {
    const cut = `${text.slice(0, n).trimEnd()}…`;
    if (ctx.measureText(cut).width <= room) return cut;
  }
  return "";
}

// A label in the region's top-left corner, on a dark backing so it reads over any colour; left out
// where the region is too small on screen to hold it.
function paintLabel(ctx, text, [x, y, w, h], color) {
  if (w < 20 || h < 14) return;
  const fitted = fitText(ctx, text, w - 7);
  if (!fitted) return;
  ctx.fillStyle = "rgba(0,0,0,0.6)";
  ctx.fillRect(x + 1.5, y + 1.5, ctx.measureText(fitted).width + 5, 12);
  ctx.fillStyle = color;
  ctx.textBaseline = "top";
  ctx.fillText(fitted, x + 4, y + 3);
}

// Another region reaching the same sampler: faded, dashed, in its type's colour, with its label.
// Context for placing this one, not editable here.
function paintOther(ctx, rect, other) {
  const colors = COLORS[other.type] ?? COLORS.foreground;
  ctx.fillStyle = colors.faint;
  ctx.fillRect(...rect);
  ctx.setLineDash([3, 3]);
  ctx.strokeStyle = colors.line;
  ctx.globalAlpha = 0.7;
  ctx.lineWidth = 1;
  ctx.strokeRect(...rect);
  ctx.setLineDash([]);
  ctx.globalAlpha = 1;
  paintLabel(ctx, other.label, rect, colors.line);
}

// The node's own region, highlighted: stronger fill, a solid outline with a light halo, the feather
// as the node computes it (core/regions.py: a ramp of feather x half the smaller side inward from
// each edge, except edges on the canvas border, which stay hard; the inner rectangle is where the
// region is at full strength) and corner handles, so resizing is discoverable.
function paintOwn(ctx, [bx, by, bw, bh], box, type, feather) {
  const colors = COLORS[type] ?? COLORS.foreground;
  ctx.fillStyle = colors.fill;
  ctx.fillRect(bx, by, bw, bh);
  const ramp = feather * Math.min(bw, bh) / 2;
  const soft = { l: box.x > 0, t: box.y > 0, r: box.x + box.width < 1, b: box.y + box.height < 1 };
  const il = bx + (soft.l ? ramp : 0);
  const it = by + (soft.t ? ramp : 0);
  const iw = Math.max(0, bx + bw - (soft.r ? ramp : 0) - il);
  const ih = Math.max(0, by + bh - (soft.b ? ramp : 0) - it);
  ctx.fillStyle = colors.core;
  ctx.fillRect(il, it, iw, ih);
  ctx.strokeStyle = colors.line;
  ctx.lineWidth = 1;
  if (ramp > 1) {
    ctx.setLineDash([4, 3]);
    ctx.strokeRect(il + 0.5, it + 0.5, Math.max(0, iw - 1), Math.max(0, ih - 1));
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = "rgba(255,255,255,0.55)";
  ctx.lineWidth = 3;
  ctx.strokeRect(bx, by, bw, bh);
  ctx.strokeStyle = colors.line;
  ctx.lineWidth = 1.5;
  ctx.strokeRect(bx, by, bw, bh);
  ctx.fillStyle = colors.line;
  for (const [cx, cy] of [[bx, by], [bx + bw, by], [bx, by + bh], [bx + bw, by + bh]]) {
    ctx.fillRect(cx - 3, cy - 3, 6, 6);
  }
}

// A line of text outside the picture (above or below it): returns where it lies, for tests.
function paintLine(ctx, text, page, below, color) {
  const fitted = fitText(ctx, text, page.width - 2);
  ctx.fillStyle = color;
  ctx.textBaseline = below ? "top" : "bottom";
  const y = below ? page.top + page.height + 4 : page.top - 4;
  ctx.fillText(fitted, page.left + 1, y);
  const width = ctx.measureText(fitted).width;
  return { left: page.left + 1, top: below ? y : y - 10, width, height: 10 };
}

function paint(canvas, state) {
  const ctx = context2d(canvas);
  const page = pageRect(state.canvas, canvas.clientWidth, canvas.clientHeight);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(page.left, page.top, page.width, page.height);
  if (state.picture) { // dimmed, so the boxes and their labels stay readable over any picture
    ctx.save();
    ctx.globalAlpha = PICTURE_ALPHA;
    ctx.drawImage(state.picture.element, page.left, page.top, page.width, page.height);
    ctx.restore();
  }
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.strokeRect(page.left + 0.5, page.top + 0.5, page.width - 1, page.height - 1);
  const rect = (b) => [page.left + b.x * page.width, page.top + b.y * page.height,
    b.width * page.width, b.height * page.height];

  for (const other of state.others) paintOther(ctx, rect(other), other);
  paintOwn(ctx, rect(state.box), state.box, state.type, state.feather);

  // The box in canvas pixels, which is what users think in.
  const { box, canvas: size } = state;
  const label = paintLine(ctx, `${Math.round(box.width * size.width)}×${Math.round(box.height * size.height)} at ` +
    `${Math.round(box.x * size.width)},${Math.round(box.y * size.height)} of ${size.width}×${size.height}`,
  page, true, "#ccc");
  const warning = size.warning ? paintLine(ctx, size.warningLine, page, false, WARNING_COLOR) : null;
  canvas.title = size.warning; // the whole warning on hover, however narrow the node

  // What was drawn, readable from the page (tests, debugging).
  Object.assign(canvas.dataset, {
    box: JSON.stringify(box),
    page: JSON.stringify(page),
    others: String(state.others.length),
    regions: JSON.stringify(state.others),
    canvas: JSON.stringify({ width: size.width, height: size.height, source: size.source }),
    label: JSON.stringify(label),
    picture: JSON.stringify(state.picture ? { from: state.picture.from, width: state.picture.width,
      height: state.picture.height } : null),
  });
  if (warning) Object.assign(canvas.dataset, { warning: size.warning, warningAt: JSON.stringify(warning) });
  else for (const key of ["warning", "warningAt"]) delete canvas.dataset[key];
  return page;
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
  let drawnPage = null; // where the picture is on screen now, for the pointer

  const state = () => ({
    box: readBox(node), // what is stored, so the picture never disagrees with the widgets
    type: widgetOf(node, "type")?.value,
    feather: Math.min(1, Math.max(0, numberOf(node, "feather", 0))),
    // Not yet in a graph (being created, being removed): nothing to walk.
    ...(node.graph ? graphView(node) : { others: [], canvas: canvasOf(node, []), picture: null }),
  });
  // The picture as the user sees it (the graph is walked at most once a frame, not on every pointer move).
  const pageNow = () => drawnPage ?? pageRect(state().canvas, canvas.clientWidth, canvas.clientHeight);

  // Repaints only when something it shows changed: called on every animation frame (see watch)
  // and whenever the classic canvas draws the node, which catches hand-edited widgets, relinked
  // chains, upstream edits and a new layout, with no callbacks to chain onto widgets that other
  // extensions may wrap too.
  const refresh = (force) => {
    if (!canvas.isConnected) adopt();
    if (!canvas.isConnected || canvas.clientWidth === 0 || canvas.clientHeight === 0) return;
    const s = state();
    const key = JSON.stringify([s, canvas.clientWidth, canvas.clientHeight, app.canvas?.ds?.scale]);
    if (!force && key === drawnKey) return;
    drawnKey = key;
    drawnPage = paint(canvas, s);
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

  // What a press at (px, py) does: a mode of hitTest on the box, "draw" on empty canvas (a new box
  // from there), null outside the picture.
  const modeAt = (page, px, py) => {
    const inside = px >= page.left && px <= page.left + page.width && py >= page.top && py <= page.top + page.height;
    return hitTest(readBox(node), page, px, py) ?? (inside ? "draw" : null);
  };

  // The pointer events of a drag stop here. In the classic canvas the DOM widget lies over the graph
  // canvas, not in it, so the graph never sees them anyway; in Nodes 2.0 the editor is inside the
  // node's element, which would otherwise take the drag for a move of the whole node. No
  // preventDefault: it would swallow the mouseup on which ComfyUI's change tracker records an undo
  // step (a window listener for mouseup, which pointer events' stopPropagation leaves alone).
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || drag) return;
    const page = pageNow();
    const [px, py] = local(e);
    const mode = modeAt(page, px, py);
    if (!mode) return; // outside the picture: the event goes on to the node or the graph
    e.stopPropagation();
    // Capture keeps the drag going when the pointer leaves the editor.
    canvas.setPointerCapture(e.pointerId);
    drag = { mode, start: readBox(node), px, py, page, q: quantumOf(node), id: e.pointerId, drawing: false };
    canvas.dataset.drag = mode; // what is being dragged, readable from the page (tests, debugging)
  });
  canvas.addEventListener("pointermove", (e) => {
    const [px, py] = local(e);
    if (!drag) {
      canvas.style.cursor = CURSORS[modeAt(pageNow(), px, py)] ?? "default";
      return;
    }
    if (e.pointerId !== drag.id) return;
    e.stopPropagation();
    if (drag.mode === "draw") {
      // A click, or a press that wobbles a pixel or two, draws nothing and leaves the box alone.
      drag.drawing ||= Math.hypot(px - drag.px, py - drag.py) >= DRAW_AFTER;
      if (!drag.drawing) return;
      const at = (x, y) => ({ x: (x - drag.page.left) / drag.page.width, y: (y - drag.page.top) / drag.page.height });
      writeBox(node, drawnBox(at(drag.px, drag.py), at(px, py), drag.q), e);
    } else {
      const dx = (px - drag.px) / drag.page.width;
      const dy = (py - drag.py) / drag.page.height;
      writeBox(node, dragBox(drag.start, drag.mode, dx, dy, drag.q), e);
    }
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
