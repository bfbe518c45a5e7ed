import dataclasses
import re

import numpy as np
import pytest

from expanse.demo import scenes

VOCABULARY = {"a", "an", "sky", "with", "and", "over", "day", "sunset", "night", "sun", "moon", "clouds",
              "mountains", "lake", "forest", "field", "golden", "stripes", "checks", "circles",
              "on", "background", *scenes.ORIENTATIONS, *scenes.PALETTE}


def blur(img, f=4):
    """f x f box downsample, then nearest upsample: roughly what a small model's output looks like."""
    h, w, _ = img.shape
    small = img[:h // f * f, :w // f * f].reshape(h // f, f, w // f, f, 3).mean((1, 3))
    return np.repeat(np.repeat(small, f, 0), f, 1)


def drawn(n, seed, size=128):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = scenes.sample_scene(rng)
        out.append((scene, scenes.draw(scene, size, size, rng)))
    return out


def test_same_seed_same_image_bit_for_bit():
    for seed in range(6):
        a, cap_a = scenes.sample(np.random.default_rng(seed), 128, 128)
        b, cap_b = scenes.sample(np.random.default_rng(seed), 128, 128)
        assert cap_a == cap_b
        assert np.array_equal(a, b)


def test_different_seeds_differ():
    images = [scenes.sample(np.random.default_rng(seed), 64, 64)[0] for seed in range(6)]
    for i in range(len(images)):
        for j in range(i):
            assert not np.array_equal(images[i], images[j])
    # the same scene drawn from two generators differs in its details
    scene = scenes.scene_from_caption("a day sky with clouds over mountains and a lake")
    a = scenes.draw(scene, 64, 64, np.random.default_rng(0))
    b = scenes.draw(scene, 64, 64, np.random.default_rng(1))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("height,width", [(128, 128), (128, 384)])
def test_shape_dtype_range(height, width):
    rng = np.random.default_rng(height + width)
    kinds = set()
    for _ in range(24):
        scene = scenes.sample_scene(rng)
        kinds.add(scene.kind)
        img = scenes.draw(scene, height, width, rng)
        assert img.shape == (height, width, 3)
        assert img.dtype == np.float32
        assert np.isfinite(img).all()
        assert img.min() >= 0.0 and img.max() <= 1.0
    assert kinds == set(scenes.KINDS)


def test_wide_images_show_more_not_stretched():
    """Features are sized by the height: three times the width shows about three times the
    stripes."""
    scene = scenes.scene_from_caption("red and white vertical stripes")

    def edges(width):
        row = scenes.draw(scene, 128, width, np.random.default_rng(3))[64, :, 1]
        return int((np.abs(np.diff(row)) > 0.4).sum())

    narrow, wide = edges(128), edges(384)
    assert narrow >= 2
    assert abs(wide - 3 * narrow) <= 3


def test_captions_parse_back():
    rng = np.random.default_rng(11)
    seen_kinds = set()
    for _ in range(200):
        scene = scenes.sample_scene(rng)
        seen_kinds.add(scene.kind)
        caption = scene.caption
        assert set(caption.split()) <= VOCABULARY, caption
        parsed = scenes.scene_from_caption(caption)
        assert parsed == scene
        assert parsed.caption == caption
    assert seen_kinds == set(scenes.KINDS)


def test_caption_examples():
    for caption in ["a sunset sky over mountains and a lake",
                    "a night sky with a moon over a forest",
                    "a day sky with clouds over a golden field",
                    "a day sky with a sun and clouds over a green field",
                    "red and white vertical stripes",
                    "blue and yellow checks",
                    "green circles on a black background",
                    "green circles on an orange background"]:
        assert scenes.scene_from_caption(caption).caption == caption
    scene = scenes.scene_from_caption("green circles on a black background")
    assert scene.kind == "circles" and scene.colors == ("green", "black")
    # for stripes and checks the order of the colours is free
    assert scenes.scene_from_caption("yellow and blue checks").colors == ("yellow", "blue")
    scene = scenes.scene_from_caption("a night sky with a moon over a forest")
    assert (scene.sky, scene.has_moon, scene.has_sun, scene.clouds, scene.mountains,
            scene.ground) == ("night", True, False, False, False, "forest")


@pytest.mark.parametrize("caption", [
    "a cat", "", "a night sky with a sun over a lake", "a day sky with a moon over a lake",
    "a day sky and clouds over a lake", "red and red checks", "pink and white checks",
    "red and white wavy stripes", "red circles on white background",
    "red circles on a orange background", "red circles on an white background",
    "a day sky over a blue field"])
def test_bad_captions_are_refused(caption):
    with pytest.raises(ValueError, match=re.escape(repr(caption))):
        scenes.scene_from_caption(caption)
    with pytest.raises(ValueError):
        scenes.check_adherence(caption, np.zeros((32, 32, 3), np.float32))


def test_held_out_captions():
    held = scenes.held_out_captions(50, seed=0)
    assert len(held) == 50 and len(set(held)) == 50
    assert held == scenes.held_out_captions(50, seed=0)
    assert held != scenes.held_out_captions(50, seed=1)
    for caption in held:
        scenes.scene_from_caption(caption)
    training = np.random.default_rng(0)
    assert held[:20] != [scenes.sample_scene(training).caption for _ in range(20)]


def test_mix_of_scenes():
    rng = np.random.default_rng(5)
    kinds = [scenes.sample_scene(rng).kind for _ in range(2000)]
    assert 0.50 < kinds.count("landscape") / len(kinds) < 0.60


def test_palette_colours_are_distinct():
    rgb = np.array(list(scenes.PALETTE.values()))
    assert len(rgb) >= 8
    d = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))
    assert d[~np.eye(len(rgb), dtype=bool)].min() > 0.3


def test_adherence_holds_for_drawn_scenes_sharp_and_blurred():
    sharp = blurred = 0
    for scene, img in drawn(100, seed=21):
        sharp += scenes.check_adherence(scene.caption, img)
        blurred += scenes.check_adherence(scene.caption, blur(img))
    assert sharp >= 95
    assert blurred >= 95
    # uint8 images are accepted too
    scene, img = drawn(1, seed=22)[0]
    assert scenes.check_adherence(scene.caption, (img * 255 + 0.5).astype(np.uint8))


def mismatched(scene, rng):
    """A caption of the same family that the picture of `scene` truly contradicts."""
    if scene.kind == "landscape":
        others = [s for s in scenes.SKIES if s != scene.sky]
        sky = others[rng.integers(len(others))]
        body = scene.has_sun or scene.has_moon
        return dataclasses.replace(scene, sky=sky, has_sun=body and sky != "night",
                                   has_moon=body and sky == "night")
    coin = rng.random() < 0.5
    if coin and scene.kind == "stripes":
        others = [o for o in scenes.ORIENTATIONS if o != scene.orientation]
        return dataclasses.replace(scene, orientation=others[rng.integers(len(others))])
    if coin and scene.kind == "circles":  # dots and background swapped
        return dataclasses.replace(scene, colors=scene.colors[::-1])
    absent = [c for c in scenes.PALETTE if c not in scene.colors]
    colors = list(scene.colors)
    colors[rng.integers(2)] = absent[rng.integers(len(absent))]
    return dataclasses.replace(scene, colors=tuple(colors))


@pytest.mark.parametrize("blurry", [False, True])
def test_adherence_refuses_mismatched_captions(blurry):
    rng = np.random.default_rng(99)
    refused = 0
    for scene, img in drawn(100, seed=31):
        wrong = mismatched(scene, rng)
        assert wrong != scene
        refused += not scenes.check_adherence(wrong.caption, blur(img) if blurry else img)
    assert refused >= 90


def test_adherence_on_plain_colours():
    h = w = 64
    day = np.broadcast_to(np.array([0.3, 0.5, 0.9], np.float32), (h, w, 3))
    sunset = np.broadcast_to(np.array([0.9, 0.45, 0.4], np.float32), (h, w, 3))
    night = np.full((h, w, 3), 0.04, np.float32)
    assert scenes.check_adherence("a day sky over a lake", day)
    assert not scenes.check_adherence("a day sky over a lake", sunset)
    assert scenes.check_adherence("a sunset sky over a lake", sunset)
    assert scenes.check_adherence("a night sky over a lake", night)
    assert not scenes.check_adherence("a sunset sky over a lake", night)
    # horizontal red/white stripes drawn by hand, and their transpose
    y = np.arange(h)[:, None, None]
    stripes = np.where((y // 8) % 2 == 0, scenes.PALETTE["red"], scenes.PALETTE["white"])
    stripes = np.broadcast_to(stripes, (h, w, 3)).astype(np.float32)
    assert scenes.check_adherence("red and white horizontal stripes", stripes)
    assert not scenes.check_adherence("red and white vertical stripes", stripes)
    assert not scenes.check_adherence("red and white checks", stripes)
    assert scenes.check_adherence("red and white vertical stripes", stripes.transpose(1, 0, 2))
