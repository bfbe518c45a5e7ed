"""Procedural captioned images for training a small latent diffusion demo model.

Two families of scenes, both of which tile and extend sideways naturally, so a model trained on
them can be asked for wide panoramas:

* landscapes: a sky (day, sunset or night), optionally a sun or a moon, clouds and mountain
  ridges, over a lake, a green or golden field, or a forest;
* patterns in named colours from `PALETTE`: stripes, checks and circles.

A `Scene` holds the attributes a caption names and nothing else; everything else (horizon
height, where the sun is, ridge shapes, stripe period...) is drawn from the generator handed to
`draw`, so one scene can be drawn many ways and the same generator state always gives the same
image, bit for bit. Images are float32 arrays of shape (height, width, 3) in [0, 1]. Every size
is measured in units of the image height, so a wider image shows more of the scene rather than a
stretched one.

Caption grammar (these words and no others; the same word always means the same thing):

    landscape := "a " SKY " sky" [BODY] [CLOUDS] " over " ["mountains and "] GROUND
    SKY       := "day" | "sunset" | "night"
    BODY      := " with a sun"                    (day and sunset skies only)
               | " with a moon"                   (night skies only)
    CLOUDS    := " and clouds"                    (after BODY)
               | " with clouds"                   (without BODY)
    GROUND    := "a lake" | "a forest" | "a green field" | "a golden field"

    stripes   := COLOR " and " COLOR " " ORIENTATION " stripes"
    checks    := COLOR " and " COLOR " checks"
    circles   := COLOR " circles on " ARTICLE " " COLOR " background"
    ARTICLE   := "an" before "orange", else "a"
    ORIENTATION := "horizontal" | "vertical" | "diagonal"
    COLOR     := "red" | "orange" | "yellow" | "green" | "blue" | "purple" | "white" | "black"

The two colours of a caption always differ. For stripes and checks their order carries no
meaning ("red and white" and "white and red" are the same picture) and is random; for circles the
first is the dots' and the second the background's.

Only the standard library and numpy are imported here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.96, 0.55, 0.08),
    "yellow": (0.96, 0.90, 0.16),
    "green": (0.14, 0.64, 0.20),
    "blue": (0.14, 0.30, 0.86),
    "purple": (0.55, 0.18, 0.70),
    "white": (0.96, 0.96, 0.96),
    "black": (0.05, 0.05, 0.05),
}

KINDS = ("landscape", "stripes", "checks", "circles")
SKIES = ("day", "sunset", "night")
GROUNDS = ("lake", "field", "forest")
FIELD_COLORS = ("green", "golden")
ORIENTATIONS = ("horizontal", "vertical", "diagonal")

_COLOR_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[n] for n in _COLOR_NAMES], dtype=np.float32)
_F32 = np.float32


@dataclass(frozen=True)
class Scene:
    """The attributes of a picture that its caption names.

    kind: "landscape", "stripes", "checks" or "circles".
    Landscapes: sky ("day", "sunset", "night"); has_sun (day and sunset only); has_moon (night
    only); clouds; mountains; ground ("lake", "field", "forest"); field_color ("green" or
    "golden", for a field only, else None).
    Patterns: colors, two different `PALETTE` names in caption order (for circles: the dots',
    then the background's); orientation ("horizontal",
    "vertical" or "diagonal", for stripes only, else None).
    """

    kind: str
    sky: str | None = None
    has_sun: bool = False
    has_moon: bool = False
    clouds: bool = False
    mountains: bool = False
    ground: str | None = None
    field_color: str | None = None
    colors: tuple[str, ...] = ()
    orientation: str | None = None

    def __post_init__(self):
        def bad(why):
            raise ValueError(f"invalid scene {self!r}: {why}")

        if self.kind not in KINDS:
            bad("unknown kind")
        if self.kind == "landscape":
            if self.sky not in SKIES or self.ground not in GROUNDS:
                bad("unknown sky or ground")
            if self.has_sun and (self.sky == "night" or self.has_moon):
                bad("a sun only in a day or sunset sky")
            if self.has_moon and self.sky != "night":
                bad("a moon only in a night sky")
            if (self.field_color is not None) != (self.ground == "field"):
                bad("field_color is for a field only")
            if self.field_color is not None and self.field_color not in FIELD_COLORS:
                bad("unknown field colour")
            if self.colors or self.orientation is not None:
                bad("colors and orientation are for patterns")
        else:
            if (self.sky is not None or self.ground is not None or self.has_sun or self.has_moon
                    or self.clouds or self.mountains or self.field_color is not None):
                bad("landscape attributes on a pattern")
            if (len(self.colors) != 2 or self.colors[0] == self.colors[1]
                    or any(c not in PALETTE for c in self.colors)):
                bad("a pattern needs two different palette colours")
            if (self.orientation is not None) != (self.kind == "stripes"):
                bad("orientation is for stripes only")
            if self.orientation is not None and self.orientation not in ORIENTATIONS:
                bad("unknown orientation")

    @property
    def caption(self) -> str:
        if self.kind == "landscape":
            text = f"a {self.sky} sky"
            body = self.has_sun or self.has_moon
            if body:
                text += " with a sun" if self.has_sun else " with a moon"
            if self.clouds:
                text += " and clouds" if body else " with clouds"
            text += " over "
            if self.mountains:
                text += "mountains and "
            return text + ("a " + self.field_color + " field" if self.ground == "field"
                           else "a " + self.ground)
        a, b = self.colors
        if self.kind == "stripes":
            return f"{a} and {b} {self.orientation} stripes"
        if self.kind == "checks":
            return f"{a} and {b} checks"
        return f"{a} circles on {_article(b)} {b} background"


# ---------------------------------------------------------------------------------------------
# sampling and parsing


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: 55% landscapes; of the patterns 45% stripes, 25% checks, 30% circles."""
    if rng.random() < 0.55:
        sky = SKIES[rng.integers(len(SKIES))]
        body = bool(rng.random() < 0.6)
        clouds = bool(rng.random() < 0.5)
        mountains = bool(rng.random() < 0.65)
        ground = GROUNDS[rng.integers(len(GROUNDS))]
        field_color = FIELD_COLORS[rng.integers(2)] if ground == "field" else None
        return Scene("landscape", sky=sky, has_sun=body and sky != "night",
                     has_moon=body and sky == "night", clouds=clouds, mountains=mountains,
                     ground=ground, field_color=field_color)
    u = rng.random()
    kind = "stripes" if u < 0.45 else "checks" if u < 0.70 else "circles"
    i, j = (int(v) for v in rng.choice(len(_COLOR_NAMES), size=2, replace=False))
    orientation = ORIENTATIONS[rng.integers(3)] if kind == "stripes" else None
    return Scene(kind, colors=(_COLOR_NAMES[i], _COLOR_NAMES[j]), orientation=orientation)


_COLOR_RE = "|".join(_COLOR_NAMES)
_LANDSCAPE_RE = re.compile(
    r"a (?P<sky>day|sunset|night) sky"
    r"(?: with a (?P<body>sun|moon))?"
    r"(?:(?P<cloud_word> with| and) clouds)?"
    r" over (?P<mountains>mountains and )?"
    r"a (?:(?P<field_color>green|golden) field|(?P<ground>lake|forest))")
_STRIPES_RE = re.compile(rf"(?P<a>{_COLOR_RE}) and (?P<b>{_COLOR_RE}) "
                         r"(?P<orientation>horizontal|vertical|diagonal) stripes")
_CHECKS_RE = re.compile(rf"(?P<a>{_COLOR_RE}) and (?P<b>{_COLOR_RE}) checks")
_CIRCLES_RE = re.compile(
    rf"(?P<a>{_COLOR_RE}) circles on (?P<article>an?) (?P<b>{_COLOR_RE}) background")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def scene_from_caption(caption: str) -> Scene:
    """The scene a caption of this module describes; ValueError if it is not one."""
    text = " ".join(caption.strip().lower().split())
    try:
        m = _LANDSCAPE_RE.fullmatch(text)
        if m:
            body = m["body"]
            if m["cloud_word"] and (m["cloud_word"] == " and") != (body is not None):
                raise ValueError("clouds joined with the wrong word")
            return Scene("landscape", sky=m["sky"], has_sun=body == "sun",
                         has_moon=body == "moon", clouds=m["cloud_word"] is not None,
                         mountains=m["mountains"] is not None,
                         ground="field" if m["field_color"] else m["ground"],
                         field_color=m["field_color"])
        m = _STRIPES_RE.fullmatch(text)
        if m:
            return Scene("stripes", colors=(m["a"], m["b"]), orientation=m["orientation"])
        m = _CHECKS_RE.fullmatch(text)
        if m:
            return Scene("checks", colors=(m["a"], m["b"]))
        m = _CIRCLES_RE.fullmatch(text)
        if m and m["article"] == _article(m["b"]):
            return Scene("circles", colors=(m["a"], m["b"]))
    except ValueError as e:
        raise ValueError(f"not a caption of demo.scenes: {caption!r} ({e})") from None
    raise ValueError(f"not a caption of demo.scenes: {caption!r}")


def held_out_captions(n: int, seed: int) -> list[str]:
    """n captions, all different while that is possible (there are a few hundred in all), drawn
    from a seed stream that `np.random.default_rng(seed)` (training) never produces."""
    rng = np.random.default_rng([int(seed), 0x5EED_0DD])
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        caption = sample_scene(rng).caption
        tries += 1
        if caption not in seen or tries > 50 * n:
            seen.add(caption)
            out.append(caption)
    return out


def sample(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, str]:
    """A random scene drawn at height x width, and its caption."""
    scene = sample_scene(rng)
    return draw(scene, height, width, rng), scene.caption


# ---------------------------------------------------------------------------------------------
# drawing


def draw(scene: Scene, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as a float32 (height, width, 3) array in [0, 1]; its details come from rng.

    Features are sized in units of the height: a wider image shows more of the scene."""
    height, width = int(height), int(width)
    if height < 8 or width < 8:
        raise ValueError(f"image too small: {height}x{width}")
    if scene.kind == "landscape":
        img = _landscape(scene, height, width, rng)
    elif scene.kind == "stripes":
        img = _stripes(scene, height, width, rng)
    elif scene.kind == "checks":
        img = _checks(scene, height, width, rng)
    else:
        img = _circles(scene, height, width, rng)
    np.clip(img, 0.0, 1.0, out=img)
    return img


def _coords(height, width):
    """Pixel centres in units of the height: ys (height,), xs (width,)."""
    ys = (np.arange(height, dtype=_F32) + _F32(0.5)) / _F32(height)
    xs = (np.arange(width, dtype=_F32) + _F32(0.5)) / _F32(height)
    return ys, xs


def _pattern_colors(scene, rng):
    return [np.clip(np.asarray(PALETTE[c], _F32) + rng.uniform(-0.03, 0.03, 3).astype(_F32), 0, 1)
            for c in scene.colors]


def _mix(alpha, a, b):
    """a where alpha is 0, b where it is 1; alpha (...,) or (..., 1); a and b broadcastable."""
    if alpha.ndim and alpha.shape[-1] != 1:
        alpha = alpha[..., None]
    return a + alpha * (b - a)


def _stripes(scene, height, width, rng):
    c1, c2 = _pattern_colors(scene, rng)
    period = _F32(rng.uniform(0.15, 0.35) * height)
    phase = _F32(rng.uniform())
    duty = _F32(rng.uniform(0.4, 0.6))
    y = np.arange(height, dtype=_F32)
    x = np.arange(width, dtype=_F32)
    if scene.orientation == "horizontal":
        s = y[:, None]
    elif scene.orientation == "vertical":
        s = x[None, :]
    else:
        sign = _F32(1.0 if rng.random() < 0.5 else -1.0)
        s = (x[None, :] + sign * y[:, None]) * _F32(1 / math.sqrt(2))
    t = s / period + phase
    t -= np.floor(t)
    # 1 in the middle of a c1 band, 0 outside it, a one-pixel soft edge between.
    alpha = np.clip(duty * period / 2 - np.abs(t - _F32(0.5)) * period + _F32(0.5), 0, 1)
    img = np.empty((height, width, 3), _F32)
    img[:] = _mix(alpha[..., None], c2, c1)
    return img


def _checks(scene, height, width, rng):
    c1, c2 = _pattern_colors(scene, rng)
    cell = rng.uniform(0.12, 0.3) * height
    ox, oy = rng.uniform(0, 2 * cell, 2)
    ix = (np.floor((np.arange(width) + ox) / cell).astype(np.int64) & 1).astype(bool)
    iy = (np.floor((np.arange(height) + oy) / cell).astype(np.int64) & 1).astype(bool)
    mask = iy[:, None] ^ ix[None, :]
    return np.where(mask[..., None], c1, c2).astype(_F32)


def _circles(scene, height, width, rng):
    dot, back = _pattern_colors(scene, rng)
    g = rng.uniform(0.16, 0.3) * height
    r = _F32(g * rng.uniform(0.26, 0.36))
    ox, oy = rng.uniform(0, g, 2)
    nx = int((width + ox) // g) + 1
    ny = int((height + oy) // g) + 1
    jitter = (rng.uniform(-0.1, 0.1, (2, ny, nx)) * g).astype(_F32)
    rscale = rng.uniform(0.85, 1.1, (ny, nx)).astype(_F32)
    X = np.arange(width, dtype=_F32) + _F32(ox)
    Y = np.arange(height, dtype=_F32) + _F32(oy)
    i = (X // _F32(g)).astype(np.intp)
    j = (Y // _F32(g)).astype(np.intp)
    dx = (X - (i + _F32(0.5)) * _F32(g))[None, :] - jitter[0][j[:, None], i[None, :]]
    dy = (Y - (j + _F32(0.5)) * _F32(g))[:, None] - jitter[1][j[:, None], i[None, :]]
    d = np.sqrt(dx * dx + dy * dy)
    alpha = np.clip(r * rscale[j[:, None], i[None, :]] - d + _F32(0.5), 0, 1)
    return _mix(alpha[..., None], back, dot).astype(_F32)


# Sky palettes: gradient stops (top, middle, horizon), mountain colour, sun or moon disc and glow,
# cloud colour, and the light falling on fields and forests.
_SKY = {
    "day": dict(top=(0.20, 0.42, 0.84), mid=(0.40, 0.60, 0.92), hor=(0.72, 0.84, 0.96),
                mount=(0.30, 0.37, 0.48), body=(1.00, 0.98, 0.86), glow=(0.45, 0.42, 0.30),
                cloud=(0.97, 0.97, 0.99), light=(1.00, 1.00, 1.00)),
    "sunset": dict(top=(0.58, 0.20, 0.40), mid=(0.90, 0.40, 0.44), hor=(1.00, 0.70, 0.36),
                   mount=(0.30, 0.16, 0.28), body=(1.00, 0.94, 0.66), glow=(0.60, 0.35, 0.15),
                   cloud=(1.00, 0.70, 0.62), light=(0.85, 0.62, 0.50)),
    "night": dict(top=(0.01, 0.02, 0.07), mid=(0.03, 0.05, 0.13), hor=(0.08, 0.11, 0.24),
                  mount=(0.03, 0.04, 0.08), body=(0.92, 0.92, 0.84), glow=(0.18, 0.20, 0.28),
                  cloud=(0.22, 0.24, 0.32), light=(0.32, 0.36, 0.50)),
}
_FIELD = {"green": (0.30, 0.56, 0.18), "golden": (0.86, 0.67, 0.26)}
_FOREST = (0.08, 0.25, 0.10)


def _fractal_1d(xs, rng, freq, octaves=5):
    """Fractal value noise in about [-1, 1] at positions xs (height units), base frequency freq
    per unit; linear interpolation keeps ridges sharp."""
    total = np.zeros_like(xs)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        n = int(float(xs[-1]) * freq) + 3
        values = rng.uniform(-1, 1, n)
        total += _F32(amp) * np.interp(xs * _F32(freq) + _F32(rng.uniform()), np.arange(n),
                                       values).astype(_F32)
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return total / _F32(norm)


def _window(height, width, cy, cx, ry, rx):
    """Pixel slices and centre coordinates (height units) of a box around (cy, cx) with half-sizes
    (ry, rx), all in height units; None if it misses the image."""
    y0, y1 = max(0, int((cy - ry) * height)), min(height, int((cy + ry) * height) + 1)
    x0, x1 = max(0, int((cx - rx) * height)), min(width, int((cx + rx) * height) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    ys = (np.arange(y0, y1, dtype=_F32) + _F32(0.5)) / _F32(height)
    xs = (np.arange(x0, x1, dtype=_F32) + _F32(0.5)) / _F32(height)
    return (slice(y0, y1), slice(x0, x1)), ys, xs


def _landscape(scene, height, width, rng):
    H, W = height, width
    aspect = W / H
    ys, xs = _coords(H, W)
    sky = {k: np.asarray(v, _F32) for k, v in _SKY[scene.sky].items()}
    shift = rng.uniform(-0.03, 0.03, 3).astype(_F32)
    for k in ("top", "mid", "hor"):
        sky[k] = np.clip(sky[k] + shift, 0, 1)
    h0 = float(rng.uniform(0.55, 0.72))
    hr = int(round(h0 * H))

    # sky gradient, lighter towards the horizon
    t = np.clip(ys / _F32(h0), 0, 1) ** _F32(1.3)
    stops = np.stack([sky["top"], sky["mid"], sky["hor"]])
    rows = np.stack([np.interp(t, (0.0, 0.5, 1.0), stops[:, c]) for c in range(3)], axis=1)
    img = np.empty((H, W, 3), _F32)
    img[:] = rows.astype(_F32)[:, None, :]

    if scene.sky == "night":
        n = int(rng.poisson(40 * aspect * h0))
        sy = (rng.uniform(0, h0 - 0.08, n) * H).astype(np.intp)
        sx = rng.integers(0, W, n)
        bright = rng.uniform(0.45, 1.0, n).astype(_F32)[:, None] * np.asarray((0.92, 0.94, 1.0),
                                                                              _F32)
        size = max(1, H // 160)
        for dy in range(size):
            for dx in range(size):
                yy, xx = np.minimum(sy + dy, H - 1), np.minimum(sx + dx, W - 1)
                img[yy, xx] = np.maximum(img[yy, xx], bright)

    # Ridge lines first (painted later, in front of sun and clouds), so that the sun or moon can
    # be put where the mountains leave it in view.
    ridges = []
    if scene.mountains:
        layers = [("far", rng.uniform(0.14, 0.26)), ("near", rng.uniform(0.07, 0.15))]
        if rng.random() < 0.4:
            layers = [("one", rng.uniform(0.10, 0.22))]
        for name, amp in layers:
            haze = {"far": 0.55, "near": 0.0, "one": 0.25}[name]
            color = _mix(np.asarray(haze, _F32), sky["mount"], sky["hor"])
            n = _fractal_1d(xs, rng, rng.uniform(1.5, 2.5) / (amp / 0.15))
            rise = _F32(amp) * np.clip(_F32(0.6) + _F32(0.7) * n, 0.06, 1)
            ridges.append((np.maximum(_F32(h0) - rise, _F32(0.24)), color))

    if scene.has_sun or scene.has_moon:
        r = rng.uniform(0.045, 0.075)
        cx = rng.uniform(0.1, 0.9) * aspect
        # the highest ground under the disc; a setting sun may dip a little behind it
        lo, hi = max(0, int((cx - r) * H)), min(W, int((cx + r) * H) + 1)
        ground = min([h0] + [float(top[lo:hi].min()) for top, _ in ridges if hi > lo])
        if scene.sky == "sunset":
            below = min(h0 - 0.06, ground - 0.2 * r)
            cy = rng.uniform(below - 0.16, below)
        else:
            below = min(h0 - 0.16, ground - 1.3 * r)
            cy = rng.uniform(0.3, max(0.3, below))
        cy = max(cy, 0.3)
        win = _window(H, W, cy, cx, 6 * r, 6 * r)
        if win is not None:
            sl, wy, wx = win
            d2 = (wy[:, None] - _F32(cy)) ** 2 + (wx[None, :] - _F32(cx)) ** 2
            glow = np.exp(d2 * _F32(-1 / (2.2 * r) ** 2))
            patch = img[sl] + glow[..., None] * sky["glow"]
            disc = np.clip((_F32(r) - np.sqrt(d2)) * _F32(H) + _F32(0.5), 0, 1)
            img[sl] = _mix(disc[..., None], patch, sky["body"])

    if scene.clouds:
        for _ in range(max(1, int(round(rng.uniform(1.2, 3.0) * aspect)))):
            _cloud(img, H, W, h0, aspect, sky["cloud"], rng)

    for top, color in ridges:
        y0 = int(float(top.min()) * H)
        if y0 >= hr:
            continue
        yy = ys[y0:hr]
        alpha = np.clip((yy[:, None] - top[None, :]) * _F32(H) + _F32(0.5), 0, 1)
        # a little haze at the foot of each ridge
        depth = np.clip((yy - _F32(top.min())) / _F32(h0 - float(top.min())), 0, 1)
        col_rows = _mix(depth[:, None] * _F32(0.25), color, sky["hor"])
        img[y0:hr] = _mix(alpha[..., None], img[y0:hr], col_rows[:, None, :])

    if hr < H:
        if scene.ground == "lake":
            _lake(img, H, W, hr, sky, rng)
        elif scene.ground == "field":
            _field(img, ys, H, W, h0, hr, sky, np.asarray(_FIELD[scene.field_color], _F32), rng)
        else:
            _forest(img, ys, xs, H, W, h0, sky, rng)
    return img


def _cloud(img, H, W, h0, aspect, color, rng):
    cx = rng.uniform(-0.1, aspect + 0.1)
    cy = rng.uniform(0.1, h0 - 0.18)
    w = rng.uniform(0.2, 0.45)
    h = w * rng.uniform(0.22, 0.35)
    k = int(rng.integers(5, 10))
    rel = rng.uniform(-0.5, 0.5, k)
    tall = 1 - 1.2 * np.abs(rel)  # puffs are bigger towards the middle of the cloud
    bx = cx + rel * w
    by = cy - tall * h * rng.uniform(0.0, 0.5, k)
    sx = w * rng.uniform(0.1, 0.2, k) * (0.6 + tall)
    sy = h * rng.uniform(0.3, 0.5, k) * (0.6 + tall)
    win = _window(H, W, cy, cx, 1.6 * h, 1.2 * w)
    if win is None:
        return
    sl, wy, wx = win
    density = np.zeros((len(wy), len(wx)), _F32)
    for i in range(k):
        gy = np.exp(-((wy - _F32(by[i])) / _F32(sy[i])) ** 2)
        gx = np.exp(-((wx - _F32(bx[i])) / _F32(sx[i])) ** 2)
        density += gy[:, None] * gx[None, :]
    # a flatter base, and a little shade underneath
    base = np.clip((_F32(cy + 0.4 * h) - wy) / _F32(0.2 * h), 0, 1)
    alpha = np.clip(density * _F32(1.4) - _F32(0.15), 0, 1) * base[:, None] * _F32(0.9)
    shade = _F32(1) - _F32(0.15) * np.clip((wy - _F32(cy)) / _F32(h) + _F32(0.5), 0, 1)
    col = shade[:, None] * color
    img[sl] = _mix(alpha[..., None], img[sl], col[:, None, :])


def _lake(img, H, W, hr, sky, rng):
    """Water mirrors the sky above the horizon, darker, with faint ripples and shimmer lines."""
    n = H - hr
    src = np.maximum(2 * hr - 1 - np.arange(hr, H), 0)
    depth = np.arange(n, dtype=_F32) / _F32(max(1, n))
    fade = (_F32(0.8) - _F32(0.18) * depth) * (_F32(1) + rng.uniform(-0.04, 0.04, n).astype(_F32))
    img[hr:] = img[src] * fade[:, None, None] + _F32(0.02) * sky["mid"]
    shimmer = np.clip(sky["hor"] * _F32(1.15) + _F32(0.08), 0, 1)
    thick = max(1, H // 128)
    for _ in range(max(3, int(round(rng.uniform(5, 10) * W / H)))):
        y = hr + 1 + int(rng.uniform() ** 1.5 * max(1, n - 1 - thick))
        x0 = int(rng.uniform(-0.1, 1.0) * W)
        x1 = x0 + int(rng.uniform(0.06, 0.3) * H)
        x0 = max(0, x0)
        if x1 > x0 and y < H:
            seg = img[y:y + thick, x0:x1]
            img[y:y + thick, x0:x1] = seg + _F32(0.35) * (shimmer - seg)


def _field(img, ys, H, W, h0, hr, sky, base, rng):
    d = ys[hr:] - _F32(h0)
    depth = np.clip(d / _F32(1 - h0), 0, 1)
    phase = _F32(rng.uniform(9, 15)) * np.sqrt(depth) + _F32(rng.uniform())
    mod = _F32(1) + _F32(0.09) * np.sin(_F32(2 * math.pi) * phase) * (_F32(0.4) + depth)
    color = base * sky["light"]
    rows = color[None, :] * (mod * (_F32(0.82) + _F32(0.3) * depth))[:, None]
    rows = _mix(_F32(0.45) * np.exp(-d / _F32(0.05)), rows, sky["hor"])
    noise = (rng.random((H - hr, W), dtype=_F32) - _F32(0.5)) * _F32(0.06)
    img[hr:] = rows[:, None, :] * (_F32(1) + noise[..., None])


def _forest(img, ys, xs, H, W, h0, sky, rng):
    s = rng.uniform(0.03, 0.055)
    u = xs / _F32(s) + _F32(rng.uniform())
    i = np.floor(u).astype(np.intp)
    f = u - i - _F32(0.5)
    heights = rng.uniform(0.5, 1.0, int(i[-1]) + 2).astype(_F32)
    bump = np.sqrt(np.clip(1 - (2 * f) ** 2, 0, 1)) * _F32(0.7 * s) * heights[i] + _F32(0.3 * s)
    top = _F32(h0) - bump
    y0 = int(float(top.min()) * H)
    yy = ys[y0:]
    alpha = np.clip((yy[:, None] - top[None, :]) * _F32(H) + _F32(0.5), 0, 1)
    # staggered rows of round crowns below the canopy line
    v = (yy - _F32(h0)) / _F32(0.8 * s)
    k = np.floor(v)
    vf = v - k - _F32(0.5)
    u2 = u[None, :] + _F32(0.5) * k[:, None]
    f2 = u2 - np.floor(u2) - _F32(0.5)
    crown = np.sqrt(np.clip(1 - (2 * f2) ** 2 - (2 * vf[:, None]) ** 2, 0, 1))
    crown = np.where(yy[:, None] < _F32(h0), np.sqrt(np.clip(1 - (2 * f) ** 2, 0, 1))[None, :],
                     crown)
    noise = (rng.random(crown.shape, dtype=_F32) - _F32(0.5)) * _F32(0.12)
    shade = _F32(0.5) + _F32(0.5) * crown + noise
    d = np.maximum(yy - _F32(h0), 0)
    color = np.asarray(_FOREST, _F32) * sky["light"]
    haze = (_F32(0.3) * np.exp(-d / _F32(0.06)))[:, None, None]
    col = shade[..., None] * color
    col = col + haze * (sky["hor"] - col)
    img[y0:] = _mix(alpha[..., None], img[y0:], col)


# ---------------------------------------------------------------------------------------------
# checking a picture against its caption


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(_F32) / _F32(255)
    return img.astype(_F32, copy=False)


def sky_kind(image) -> str | None:
    """"day", "sunset" or "night" from the per-channel median colour (r, g, b) of the top 20% of
    rows, luminance L = 0.299 r + 0.587 g + 0.114 b: night if L < 0.18; else sunset if
    r > b + 0.05 (warm, red-dominant); else day if b > r + 0.1 and L > 0.3 (blue and bright);
    else None."""
    img = _as_image(image)
    band = img[:max(1, int(round(0.2 * img.shape[0])))]
    step = max(1, band.shape[1] // 256)
    r, g, b = np.median(band[:, ::step].reshape(-1, 3), axis=0)
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    if lum < 0.18:
        return "night"
    if r > b + 0.05:
        return "sunset"
    if b > r + 0.1 and lum > 0.3:
        return "day"
    return None


def palette_votes(image) -> dict[str, int]:
    """For every palette colour, how many pixels are nearer to it than to any other (over a
    subsample of at most about 128x128 pixels)."""
    img = _as_image(image)
    step = max(1, min(img.shape[0], img.shape[1]) // 128)
    px = img[::step, ::step].reshape(-1, 3)
    d = ((px[:, None, :] - _PALETTE_RGB[None, :, :]) ** 2).sum(-1)
    counts = np.bincount(d.argmin(1), minlength=len(_COLOR_NAMES))
    return {name: int(c) for name, c in zip(_COLOR_NAMES, counts)}


def structure(image) -> str:
    """"horizontal", "vertical", "diagonal" or "balanced", from gradient energy.

    The image is first box-averaged by f = max(1, H // 32) (to about 32 rows, which evens out
    noise and blockiness). On that RGB image I, with lags k = 1 and 2 summed: gx = mean
    |I(y, x+k) - I(y, x)|, gy = mean |I(y+k, x) - I(y, x)|, and d1, d2 the same along the two
    diagonals (k, k) and (k, -k). "horizontal" (horizontal bands: mostly vertical change) if
    gy > 2 gx; "vertical" if gx > 2 gy; otherwise "diagonal" if max(d1, d2) > 2 min(d1, d2) (one
    diagonal direction runs along the structure), else "balanced" (checks, dots, or flat)."""
    img = _as_image(image)
    f = max(1, img.shape[0] // 32)
    h, w = img.shape[0] // f, img.shape[1] // f
    if f > 1:
        img = img[:h * f, :w * f].reshape(h, f, w, f, 3).mean((1, 3))
    if h < 3 or w < 3:
        return "balanced"
    gx = gy = d1 = d2 = 1e-6
    for k in (1, 2):
        gx += float(np.abs(img[:, k:] - img[:, :-k]).mean())
        gy += float(np.abs(img[k:] - img[:-k]).mean())
        d1 += float(np.abs(img[k:, k:] - img[:-k, :-k]).mean())
        d2 += float(np.abs(img[k:, :-k] - img[:-k, k:]).mean())
    if gy > 2 * gx:
        return "horizontal"
    if gx > 2 * gy:
        return "vertical"
    if max(d1, d2) > 2 * min(d1, d2):
        return "diagonal"
    return "balanced"


def check_adherence(caption: str, image: np.ndarray) -> bool:
    """Whether an (H, W, 3) image in [0, 1] (or uint8) plausibly shows what `caption` says.

    The caption must be one of this module's (else ValueError). What is checked:

    * landscapes: only the sky kind, by `sky_kind` on the top 20% of rows: sunset = warm,
      red-dominant median colour (r > b + 0.05); night = dark (median luminance < 0.18);
      day = blue-dominant and bright (b > r + 0.1, luminance > 0.3). Sun, moon, clouds,
      mountains and ground are not checked.
    * patterns: every pixel votes for its nearest `PALETTE` colour (`palette_votes`); the two
      colours with most votes must be exactly the caption's two (in either order). Then:
      stripes: `structure` must equal the caption's orientation (horizontal stripes = mostly
      vertical gradients, vertical = mostly horizontal gradients, diagonal = balanced x/y
      gradients with a strong difference between the two diagonal directions);
      checks: `structure` must be "balanced" (not stripes);
      circles: the dot colour must have fewer votes than the background colour.
    """
    scene = scene_from_caption(caption)
    img = _as_image(image)
    if scene.kind == "landscape":
        return sky_kind(img) == scene.sky
    votes = palette_votes(img)
    top2 = sorted(votes, key=lambda name: -votes[name])[:2]
    if set(top2) != set(scene.colors):
        return False
    if scene.kind == "stripes":
        return structure(img) == scene.orientation
    if scene.kind == "checks":
        return structure(img) == "balanced"
    return votes[scene.colors[0]] < votes[scene.colors[1]]
