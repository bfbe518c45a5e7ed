"""A template's thumbnail: the template run with the demo model on a server, drawn as a picture of
what its technique does rather than only its result:

    progressive      the stages side by side at their relative sizes, smallest first, each labelled
    tiled_diffusion  the result, and the result with the tile grid the sampler used drawn over it
    regions          the result with each region's box, labelled and coloured by type
    upscale          before (the input, resized plainly) | after (the redraw), split in the middle,
                     with the redraw's tile grid in chess colours on the after half
    poster           composition, grown stage and the redrawn result (with its tile grid), in a row
    print            the picture and each 2x pass's result in a row, the saved file's overview last
                     (with the last pass's tile grid)
    upscale_methods  the middle of each method's upscale, enlarged, in a labelled 2x2 grid
    tiled_vae        original | round trip (tile grid drawn over it), and their difference, amplified

The run is the template's own prompt (ui_to_api; for a checkpoint template scaled for the demo model,
demo_scale.for_demo) with a SaveImage added for each picture the drawing needs (a stage's latent is
decoded for it). Labels give the template's own sizes and settings, not the scaled ones; the
geometry drawn is the pack's own (core.tiling, core.progressive) at the sizes that ran. A demo
template's thumbnail carries a "demo model" badge; a checkpoint template's says that the demo model
drew it at a fraction of the size.

The pictures are 512 px squares: the template browser shows them in square cards, about 256 px.
"""
from __future__ import annotations

import io
import urllib.parse

from .demo_scale import for_demo, upload_demo_images
from .examples import TEMPLATES, demo_settings
from .save_format import Definitions
from .ui_to_api import ui_to_api

SIDE = 512
BACKGROUND = (24, 26, 32)
TEXT = (238, 240, 244)
MUTED = (170, 176, 188)
ACCENT = (255, 196, 64)
BACKGROUND_REGION = (74, 163, 255)
FOREGROUND_REGION = (255, 140, 58)
# The band the heading takes at the top (right-aligned: frontend 1.49.6 lays a "Node graph" badge
# over the top left of every thumbnail) and the one the detail line and the footer take at the bottom.
TOP, BOTTOM = 58, SIDE - 62
# The latent grid of the SD-family models the templates use (the demo model's too): sizes in the
# labels are pixels, the pack's geometry works in latent pixels.
LATENT_PX = 8


# --- the run ------------------------------------------------------------------------------------------

class Run:
    """An API prompt to run for a thumbnail, and the SaveImage nodes added to it for the pictures."""

    def __init__(self, prompt: dict, name: str):
        self.prompt, self.name, self.saved = prompt, name, {}

    def nodes(self, class_type: str) -> list[str]:
        return sorted((k for k, n in self.prompt.items() if n["class_type"] == class_type), key=_node_order)

    def node(self, class_type: str, index: int = 0) -> str:
        found = self.nodes(class_type)
        if len(found) <= index:
            raise KeyError(f"{self.name}: no {class_type} #{index} in the prompt")
        return found[index]

    def inputs(self, node_id: str) -> dict:
        return self.prompt[node_id]["inputs"]

    def titled(self, title: str) -> str:
        return next(k for k, n in self.prompt.items() if n.get("_meta", {}).get("title") == title)

    def vae(self) -> list:
        loader = self.node("ExpanseDemoModelLoader")
        return [loader, 2]

    def save(self, role: str, source: list, latent: bool = False) -> None:
        """Saves the picture at `source` ([node id, output]) under `role`; a latent is decoded first."""
        if latent:
            decode = f"thumb_decode_{role}"
            self.prompt[decode] = {"class_type": "VAEDecode", "inputs": {"samples": source, "vae": self.vae()}}
            source = [decode, 0]
        self.prompt[f"thumb_save_{role}"] = {"class_type": "SaveImage",
                                            "inputs": {"images": source, "filename_prefix": f"thumb_{role}"}}
        self.saved[role] = f"thumb_save_{role}"

    def save_result(self) -> None:
        save = self.node("SaveImage")
        self.save("result", self.inputs(save)["images"])


def _node_order(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _fetch(server, entry: dict, node_id: str) -> list:
    from PIL import Image

    pictures = []
    for image in entry.get("outputs", {}).get(node_id, {}).get("images", []):
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        pictures.append(Image.open(io.BytesIO(server.get(f"/view?{query}"))).convert("RGB"))
    return pictures


def _pack():
    """The pack's engine (core/ is plain torch), for the geometry the nodes use."""
    from ..host import register_pack

    register_pack()
    from expanse.core import progressive, tiling
    return progressive, tiling


# --- drawing ------------------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size)


class Card:
    """A SIDE x SIDE picture: pictures fitted into boxes, labels on dark plates, a caption."""

    def __init__(self):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (SIDE, SIDE), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image, "RGBA")

    def fit(self, picture, box: tuple[int, int, int, int], align: str = "center"):
        """picture scaled to fit box (x0, y0, x1, y1), keeping its shape; returns where it went and
        the scale applied."""
        from PIL import Image

        x0, y0, x1, y1 = box
        scale = min((x1 - x0) / picture.width, (y1 - y0) / picture.height)
        w, h = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
        x = x0 + ((x1 - x0 - w) // 2 if align == "center" else 0)
        y = y0 + (y1 - y0 - h) // 2 if align == "center" else y1 - h
        self.image.paste(picture.resize((w, h), Image.LANCZOS), (x, y))
        return (x, y, x + w, y + h), scale

    def label(self, text: str, xy: tuple[float, float], size: int = 20, colour=TEXT, plate=(0, 0, 0, 170),
              anchor: str = "la") -> tuple[int, int, int, int]:
        font = _font(size)
        pad = max(3, size // 5)
        x0, y0, x1, y1 = self.draw.textbbox(xy, text, font=font, anchor=anchor)
        shift = min(0, SIDE - pad - 2 - x1) or max(0, pad + 2 - x0)  # kept inside the card
        xy = (xy[0] + shift, xy[1])
        x0, x1 = x0 + shift, x1 + shift
        rect = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        if plate:
            self.draw.rounded_rectangle(rect, radius=pad, fill=plate)
        self.draw.text(xy, text, font=font, fill=colour, anchor=anchor)
        return rect

    def heading(self, title: str, detail: str) -> None:
        """The technique's name at the top right, what the picture shows above the footer."""
        self.draw.text((SIDE - 14, 12), title, font=_font(28), fill=TEXT, anchor="ra")
        self.draw.text((SIDE // 2, SIDE - 34), detail, font=_font(18), fill=MUTED, anchor="md")

    def footer(self, text: str, colour=MUTED, size: int = 16) -> None:
        self.draw.text((SIDE // 2, SIDE - 8), text, font=_font(size), fill=colour, anchor="md")

    def rectangle(self, rect, outline, width: int = 2, fill=None) -> None:
        self.draw.rectangle(rect, outline=outline, width=width, fill=fill)

    def jpeg(self) -> bytes:
        out = io.BytesIO()
        self.image.save(out, "JPEG", quality=88, optimize=True)
        return out.getvalue()


def _px(width: int, height: int) -> str:
    return f"{width}x{height}"


def _on_picture(rect, scale: float, box) -> tuple[float, float, float, float]:
    """A box (y0, y1, x0, x1) in picture pixels, where fit() put the picture (rect, scale)."""
    y0, y1, x0, x1 = box
    return (rect[0] + x0 * scale, rect[1] + y0 * scale, rect[0] + x1 * scale - 1, rect[1] + y1 * scale - 1)


# --- the techniques -----------------------------------------------------------------------------------

def _progressive_capture(run: Run) -> None:
    grow = run.node("ExpanseProgressiveGrowSampler")
    run.save("stages", [grow, 1], latent=True)


def _stage_sizes(full: dict, grow: str, latent_node: str) -> list[tuple[int, int]]:
    """The stages' sizes in pixels (width, height) for the template's own settings."""
    progressive, _ = _pack()
    settings, latent = full[grow]["inputs"], full[latent_node]["inputs"]
    plan = progressive.plan(latent["height"] // LATENT_PX, latent["width"] // LATENT_PX, stages=settings["stages"],
                            min_scale=settings["min_scale"], max_scale=settings["max_scale"],
                            spacing=settings["spacing"])
    return [(s.width * LATENT_PX, s.height * LATENT_PX) for s in plan]


def _row_of_growing(card: Card, pictures, labels, top: int, bottom: int, last_grid=None) -> None:
    """Pictures in a row, bottom-aligned, each drawn at its size relative to the last one (which
    gets the most room), with a label under each; last_grid(rect, scale) draws over the last one."""
    gap, n = 14, len(pictures)
    widths = [p.width / pictures[-1].width for p in pictures]
    height_room = bottom - top - 34
    unit = min((SIDE - 24 - gap * (n - 1)) / sum(widths), height_room * pictures[-1].width / pictures[-1].height)
    x = (SIDE - unit * sum(widths) - gap * (n - 1)) / 2
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        w = unit * widths[i]
        h = w * picture.height / picture.width
        rect, scale = card.fit(picture, (round(x), round(top + height_room - h), round(x + w), top + height_room))
        card.label(label, ((rect[0] + rect[2]) / 2, top + height_room + 8), size=18, anchor="ma", plate=None,
                   colour=TEXT)
        if i < n - 1:
            card.draw.text((rect[2] + gap / 2, (rect[1] + rect[3]) / 2), ">", font=_font(20), fill=ACCENT,
                           anchor="mm")
        if i == n - 1 and last_grid is not None:
            last_grid(rect, scale)
        x += w + gap


def _progressive_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    grow = run.node("ExpanseProgressiveGrowSampler")
    sizes = _stage_sizes(full, grow, run.inputs(grow)["latent_image"][0])
    stages = pictures["stages"]
    card.heading("Progressive Grow", f"drawn at {_px(*sizes[0])}, grown in {len(sizes)} stages")
    labels = [_px(*size) for size in sizes]
    _row_of_growing(card, stages, labels, TOP, BOTTOM)


def _tiled_capture(run: Run) -> None:
    run.save_result()


def _diffusion_boxes(run: Run, picture) -> list:
    """The tiles of the run's Tiled Diffusion on its result, in picture pixels."""
    _, tiling = _pack()
    settings = run.inputs(run.node("ExpanseTiledDiffusion"))
    g = LATENT_PX
    overlap = 0 if settings["method"] == "shifted" else settings["overlap"] // g
    boxes = tiling.tile_boxes(picture.height // g, picture.width // g, settings["tile_height"] // g,
                              settings["tile_width"] // g, overlap)
    return [tuple(v * g for v in box) for box in boxes]


TILE_COLOURS = [(255, 196, 64), (74, 163, 255), (120, 220, 120), (255, 110, 150)]


def _draw_tiles(card: Card, rect, scale, boxes, width: int = 2, fill_alpha: int = 0) -> None:
    for i, box in enumerate(boxes):
        colour = TILE_COLOURS[i % len(TILE_COLOURS)]
        fill = colour + (fill_alpha,) if fill_alpha else None
        card.rectangle(_on_picture(rect, scale, box), outline=colour + (235,), width=width, fill=fill)


def _tiled_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    result = pictures["result"][0]
    node = run.node("ExpanseTiledDiffusion")
    settings = full[node]["inputs"]
    latent = full[run.node("EmptyLatentImage")]["inputs"]
    boxes = _diffusion_boxes(run, result)
    card.heading("Tiled Diffusion", f"{_px(latent['width'], latent['height'])}, {len(boxes)} tiles of "
                                    f"{settings['tile_width']} px, {settings['overlap']} px overlap")
    top, bottom, gap = TOP, BOTTOM, 16
    height = min((bottom - top - gap) // 2, round((SIDE - 24) * result.height / result.width))
    y = top + (bottom - top - 2 * height - gap) // 2
    rect, _ = card.fit(result, (12, y, SIDE - 12, y + height))
    card.label("result", (rect[0] + 6, rect[3] - 6), size=18, anchor="ld")
    rect, scale = card.fit(result, (12, y + height + gap, SIDE - 12, y + 2 * height + gap))
    _draw_tiles(card, rect, scale, boxes, width=3, fill_alpha=40)
    card.label("the tiles, fused every step", (rect[0] + 6, rect[3] - 6), size=18, anchor="ld")


def _regions_capture(run: Run) -> None:
    run.save_result()


def _regions_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    result = pictures["result"][0]
    regions = run.nodes("ExpanseRegionPrompt")
    latent = full[run.node("EmptyLatentImage")]["inputs"]
    card.heading("Region Prompts", f"{len(regions)} regions on {_px(latent['width'], latent['height'])}")
    rect, scale = card.fit(result, (12, TOP, SIDE - 12, BOTTOM - 36))
    w, h = result.width, result.height
    for node in regions:
        r = run.inputs(node)
        colour = BACKGROUND_REGION if r["type"] == "background" else FOREGROUND_REGION
        box = (r["y"] * h, (r["y"] + r["height"]) * h, r["x"] * w, (r["x"] + r["width"]) * w)
        edge = _on_picture(rect, scale, box)
        card.rectangle(edge, outline=colour + (255,), width=3)
        title = run.prompt[node]["_meta"]["title"]
        card.label(title, (edge[0] + 5, edge[1] + 5), size=17, plate=colour + (215,), colour=(10, 10, 14))
    card.label("background: blends", (SIDE // 2 - 8, BOTTOM - 14), size=18, plate=BACKGROUND_REGION + (215,),
               colour=(10, 10, 14), anchor="rm")
    card.label("foreground: replaces", (SIDE // 2 + 8, BOTTOM - 14), size=18, plate=FOREGROUND_REGION + (215,),
               colour=(10, 10, 14), anchor="lm")


def _upscale_capture(run: Run) -> None:
    first = run.node("ExpanseChessTileRedraw")
    run.save("before", run.inputs(first)["image"])
    run.save_result()


def _chess_grid(run: Run, node: str, picture) -> list[tuple[tuple, int]]:
    """The redraw tiles of a Chess Tile Redraw on its result, in picture pixels, with their pass
    (chess colour) as the node cuts them (core.tiling.spans on the latent grid)."""
    _, tiling = _pack()
    settings, g = run.inputs(node), LATENT_PX
    rows = tiling.spans(picture.height // g, max(1, settings["tile_height"] // g))
    cols = tiling.spans(picture.width // g, max(1, settings["tile_width"] // g))
    return [((y0 * g, y1 * g, x0 * g, x1 * g), (r + c) % 2)
            for r, (y0, y1) in enumerate(rows) for c, (x0, x1) in enumerate(cols)]


def _draw_chess(card: Card, rect, scale, tiles, clip=None) -> None:
    for box, colour in tiles:
        edge = _on_picture(rect, scale, box)
        if clip is not None:
            edge = (max(edge[0], clip[0]), edge[1], min(edge[2], clip[2]), edge[3])
            if edge[2] <= edge[0]:
                continue
        tint = (255, 196, 64, 46) if colour == 0 else (74, 163, 255, 46)
        card.rectangle(edge, outline=(255, 255, 255, 120), width=1, fill=tint)


def _upscale_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    from PIL import Image

    before, after = pictures["before"][0], pictures["result"][0]
    redraws = run.nodes("ExpanseChessTileRedraw")
    factor = 1.0
    for node in redraws:
        factor *= full[node]["inputs"]["upscale_by"]
    tile = full[redraws[-1]]["inputs"]
    passes = "two passes of " if len(redraws) == 2 else ""
    card.heading("Chess Tile Redraw", f"{factor:g}x: {passes}{tile['tile_width']}x{tile['tile_height']} px tiles "
                                      "in chess order")
    plain = before.resize(after.size, Image.BICUBIC)
    split = plain.copy()
    split.paste(after.crop((after.width // 2, 0, after.width, after.height)), (after.width // 2, 0))
    rect, scale = card.fit(split, (12, TOP, SIDE - 12, BOTTOM))
    middle = (rect[0] + rect[2]) / 2
    _draw_chess(card, rect, scale, _chess_grid(run, redraws[-1], after), clip=(middle, 0, rect[2], 0))
    card.draw.line([(middle, rect[1]), (middle, rect[3])], fill=TEXT, width=3)
    card.label("before: resized", (middle - 8, rect[3] - 8), size=19, anchor="rd")
    card.label("after: redrawn", (middle + 8, rect[3] - 8), size=19, anchor="ld")


def _poster_capture(run: Run) -> None:
    grow = run.node("ExpanseProgressiveGrowSampler")
    run.save("stages", [grow, 1], latent=True)
    run.save_result()


def _poster_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    grow = run.node("ExpanseProgressiveGrowSampler")
    redraw = run.node("ExpanseChessTileRedraw")
    sizes = _stage_sizes(full, grow, run.inputs(grow)["latent_image"][0])
    factor = full[redraw]["inputs"]["upscale_by"]
    final = (round(sizes[-1][0] * factor), round(sizes[-1][1] * factor))
    card.heading("Poster", "progressive grow, then chess tile redraw")
    result = pictures["result"][0]
    stages = pictures["stages"] + [result]
    labels = [_px(*s) for s in sizes] + [_px(*final)]
    tiles = _chess_grid(run, redraw, result)
    _row_of_growing(card, stages, labels, TOP, BOTTOM,
                    last_grid=lambda rect, scale: _draw_chess(card, rect, scale, tiles))


def _print_capture(run: Run) -> None:
    run.save("base", run.inputs(run.node("ExpanseChessTileRedraw"))["latent"], latent=True)
    for i, node in enumerate(run.nodes("ExpanseChessTileRedraw")[:-1]):
        run.save(f"pass{i + 1}", [node, 1], latent=True)
    run.save("result", [run.node("ExpanseSaveLargeImage"), 0])


def _print_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    redraws = run.nodes("ExpanseChessTileRedraw")
    base = full[run.node("EmptyLatentImage")]["inputs"]
    factors = [1.0]
    for node in redraws:
        factors.append(factors[-1] * full[node]["inputs"]["upscale_by"])
    final = _px(round(base["width"] * factors[-1]), round(base["height"] * factors[-1]))
    card.heading("Poster Print", f"{len(redraws)} chess redraws, latent to latent, streamed to a large TIFF")
    result = pictures["result"][0]
    stages = [pictures["base"][0]] + [pictures[f"pass{i + 1}"][0] for i in range(len(redraws) - 1)] + [result]
    labels = ["base"] + [f"{f:g}x" for f in factors[1:-1]] + [f"{factors[-1]:g}x: {final}"]
    tiles = _chess_grid(run, redraws[-1], result)
    _row_of_growing(card, stages, labels, TOP, BOTTOM - 26,
                    last_grid=lambda rect, scale: _draw_chess(card, rect, scale, tiles))
    card.label("saved tile by tile: pyramidal BigTIFF + Deep Zoom", (SIDE // 2, BOTTOM - 6), size=18, anchor="md",
               plate=None, colour=ACCENT)


def _methods_capture(run: Run) -> None:
    for node in run.nodes("ExpanseLatentUpscaleAdvanced"):
        method = run.inputs(node)["upscale_method"]
        decode = next(k for k, n in run.prompt.items()
                      if n["class_type"] == "ExpanseTiledVAEDecode" and n["inputs"]["samples"] == [node, 0])
        run.save(method, [decode, 0])


def _methods_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    methods = [run.inputs(node)["upscale_method"] for node in run.nodes("ExpanseLatentUpscaleAdvanced")]
    scale_by = full[run.nodes("ExpanseLatentUpscaleAdvanced")[0]]["inputs"]["scale_by"]
    card.heading("Latent Upscale", f"one latent {scale_by:g}x, {len(methods)} methods, decoded (centre, enlarged)")
    gap, top = 10, TOP
    cell = min((SIDE - 24 - gap) // 2, (BOTTOM - top - gap) // 2)
    left = (SIDE - 2 * cell - gap) // 2
    for i, method in enumerate(methods):
        picture = pictures[method][0]
        w, h = picture.width // 2, picture.height // 2
        crop = picture.crop(((picture.width - w) // 2, (picture.height - h) // 2,
                             (picture.width + w) // 2, (picture.height + h) // 2))
        from PIL import Image

        crop = crop.resize((cell, cell), Image.NEAREST)
        x, y = left + (i % 2) * (cell + gap), top + (i // 2) * (cell + gap)
        card.image.paste(crop, (x, y))
        card.label(method, (x + 6, y + cell - 6), size=20, anchor="ld")


def _vae_capture(run: Run) -> None:
    stitch = run.node("ImageStitch")
    run.save("original", run.inputs(stitch)["image1"])
    run.save("round_trip", run.inputs(stitch)["image2"])


def _vae_draw(card: Card, run: Run, full: dict, pictures: dict) -> None:
    import numpy as np
    from PIL import Image

    original, back = pictures["original"][0], pictures["round_trip"][0]
    original = original.crop((0, 0, back.width, back.height))  # cropped to the VAE's grid as the encode does
    decode = run.node("ExpanseTiledVAEDecode")
    tile, full_tile = run.inputs(decode)["tile_size"], full[decode]["inputs"]["tile_size"]
    mode = run.inputs(decode)["mode"]
    card.heading("Tiled VAE", f"encode + decode in {full_tile} px tiles, {mode} mode")
    side = 220
    rect, _ = card.fit(original, (SIDE // 2 - side - 8, TOP, SIDE // 2 - 8, TOP + side))
    card.label("original", (rect[0] + 6, rect[3] - 6), size=18, anchor="ld")
    rect, scale = card.fit(back, (SIDE // 2 + 8, TOP, SIDE // 2 + 8 + side, TOP + side))
    _, tiling = _pack()
    rows, cols = tiling.spans(back.height, tile), tiling.spans(back.width, tile)
    boxes = [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
    _draw_chess(card, rect, scale, [(box, (i // len(cols) + i % len(cols)) % 2) for i, box in enumerate(boxes)])
    card.label("round trip", (rect[0] + 6, rect[3] - 6), size=18, anchor="ld")
    diff = np.abs(np.asarray(back, np.float32) - np.asarray(original, np.float32)).mean(axis=2)
    heat = Image.fromarray(np.clip(diff * 8, 0, 255).astype(np.uint8)).convert("RGB")
    rect, scale = card.fit(heat, (SIDE // 2 + 8, TOP + side + 12, SIDE // 2 + 8 + side, BOTTOM))
    for box in boxes:
        card.rectangle(_on_picture(rect, scale, box), outline=(255, 196, 64, 200), width=1)
    for i, line in enumerate(["their difference x8,", "tile borders in yellow:", "no seams"]):
        card.label(line, (SIDE // 2 - 8, rect[1] + 30 + 26 * i), size=19, anchor="ra", plate=None,
                   colour=TEXT if i == 2 else MUTED)


TECHNIQUES = {
    "progressive": (_progressive_capture, _progressive_draw),
    "tiled_diffusion": (_tiled_capture, _tiled_draw),
    "regions": (_regions_capture, _regions_draw),
    "upscale": (_upscale_capture, _upscale_draw),
    "poster": (_poster_capture, _poster_draw),
    "print": (_print_capture, _print_draw),
    "upscale_methods": (_methods_capture, _methods_draw),
    "tiled_vae": (_vae_capture, _vae_draw),
}


def thumbnail(server, name: str, workflow: dict, defs: Definitions) -> bytes:
    """The template `name`'s workflow (UI format) run with the demo model on the ComfyUI server,
    drawn as its technique's picture (see the module's docstring): a SIDE px square JPEG."""
    template = TEMPLATES[name]
    capture, draw = TECHNIQUES[template.technique]
    demo = demo_settings(name, defs)
    upload_demo_images(server, demo)
    full = ui_to_api(workflow, defs)
    run = Run(for_demo(full, demo, prefix=f"thumb_{name}"), name)
    capture(run)
    entry = server.run(run.prompt, timeout=900, what=f"the thumbnail run of {name}")
    pictures = {role: _fetch(server, entry, node) for role, node in run.saved.items()}
    missing = [role for role, found in pictures.items() if not found]
    if missing:
        raise RuntimeError(f"{name}: the thumbnail run saved no picture for {missing}")
    card = Card()
    draw(card, run, full, pictures)
    if template.demo:
        card.footer("runs on the demo model: no download", colour=ACCENT, size=18)
    else:
        card.footer(f"preview drawn by the demo model at 1/{demo.get('scale', 1):g} size")
    return card.jpeg()
