"""A small product catalogue that clipft draws itself: t-shirts with long, short or no
sleeves, mugs and pans with or without a lid, in known colours, with titles. It lets the
quick start, the demo and the tests run anywhere, with no download and no licence question.

Columns follow the fashion catalogue's names (``baseColour``, ``articleType``) so the shipped
prompt files read both; ``sleeve`` and ``lid`` are empty where they do not apply. About one
product in six has a stripe of a second colour: ``colours`` holds both (``Black|White``, for the
multi-valued ``colours.yaml``), ``baseColour`` the main one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..fileio import atomic_write

COLOURS = {
    "Black": (25, 25, 25),
    "White": (245, 245, 245),
    "Red": (200, 30, 35),
    "Green": (40, 150, 60),
    "Blue": (40, 80, 200),
    "Yellow": (240, 210, 40),
    "Pink": (240, 140, 180),
    "Purple": (120, 50, 150),
    "Grey": (128, 128, 128),
    "Brown": (110, 70, 40),
    "Navy Blue": (20, 30, 90),
}
SLEEVES = ("Long-sleeved", "Short-sleeved", "Sleeveless")
LIDS = ("With lid", "Without lid")
KINDS = ("Tshirts", "Mugs", "Pans")
BRANDS = ("Acme", "Northwind", "Contoso", "Globex", "Initech")


def _jitter(rng, rgb, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _outline(rgb):
    return tuple(max(0, c - 60) if sum(rgb) > 150 else min(255, c + 60) for c in rgb)


def draw_product(kind: str, colour: str, sleeve: str | None, lid: str | None, size: int, rng) -> Image.Image:
    """Render one product photo: the item on a light studio background with small random
    changes of position, scale, shade and background so that no two photos are identical."""
    bg = _jitter(rng, (228, 226, 222), 10)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    fill = _jitter(rng, COLOURS[colour])
    edge = _outline(fill)
    s = size * rng.uniform(0.8, 1.0) / 100.0  # drawing units: a 100x100 box, scaled
    ox = size / 2 + rng.uniform(-0.06, 0.06) * size
    oy = size / 2 + rng.uniform(-0.06, 0.06) * size

    def pt(x, y):
        return (ox + (x - 50) * s, oy + (y - 50) * s)

    def poly(points):
        d.polygon([pt(x, y) for x, y in points], fill=fill, outline=edge)

    if kind == "Tshirts":
        if sleeve == "Long-sleeved":
            poly([(30, 22), (8, 78), (20, 82), (34, 45)])
            poly([(70, 22), (92, 78), (80, 82), (66, 45)])
        elif sleeve == "Short-sleeved":
            poly([(30, 22), (14, 42), (26, 50), (34, 40)])
            poly([(70, 22), (86, 42), (74, 50), (66, 40)])
        poly([(30, 20), (42, 16), (50, 22), (58, 16), (70, 20), (68, 88), (32, 88)])
    elif kind == "Mugs":
        d.ellipse([pt(62, 38), pt(86, 68)], outline=fill, width=max(2, int(5 * s)))
        poly([(22, 30), (68, 30), (66, 84), (24, 84)])
        if lid == "With lid":
            lid_fill = _outline(fill)
            d.rectangle([pt(19, 22), pt(71, 31)], fill=lid_fill)
            d.rectangle([pt(40, 16), pt(50, 22)], fill=lid_fill)
    elif kind == "Pans":
        d.rectangle([pt(70, 46), pt(98, 54)], fill=(40, 40, 40))
        d.ellipse([pt(8, 18), pt(72, 82)], fill=fill, outline=edge, width=max(1, int(2 * s)))
        if lid == "With lid":
            d.ellipse([pt(14, 24), pt(66, 76)], fill=_jitter(rng, (200, 205, 210), 8), outline=(90, 90, 90))
            d.ellipse([pt(34, 44), pt(46, 56)], fill=(30, 30, 30))
        else:
            d.ellipse([pt(16, 26), pt(64, 74)], fill=_outline(fill))
    else:
        raise ValueError(f"unknown product kind {kind!r}; expected one of {KINDS}")
    noise = rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


TWO_COLOUR_SHARE = 1 / 6


def add_stripe(img: Image.Image, colour: str, rng) -> Image.Image:
    """A band of a second colour across the middle of the product."""
    d = ImageDraw.Draw(img)
    size = img.size[0]
    d.rectangle([0.3 * size, 0.5 * size, 0.7 * size, 0.62 * size], fill=_jitter(rng, COLOURS[colour]))
    return img


def _title(kind: str, colour: str, sleeve: str | None, lid: str | None, brand: str, code: str) -> str:
    # A style code keeps titles unique, as in real catalogues: identical titles mean one product group.
    if kind == "Tshirts":
        return f"{brand} {colour} {sleeve} T-shirt {code}"
    noun = "Mug" if kind == "Mugs" else "Frying Pan"
    return f"{brand} {colour} {noun} {lid.lower()} {code}"


def make_catalogue(out_dir: str | os.PathLike, n: int = 240, size: int = 128, seed: int = 0) -> Path:
    """Draw ``n`` products into ``out_dir/images`` and write ``out_dir/catalogue.csv``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    stripes = np.random.default_rng([seed, 1])  # its own stream: the one-colour products stay as they were
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS)
    rows = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        colour = colours[rng.integers(len(colours))]
        sleeve = SLEEVES[rng.integers(len(SLEEVES))] if kind == "Tshirts" else None
        lid = LIDS[rng.integers(len(LIDS))] if kind != "Tshirts" else None
        brand = BRANDS[rng.integers(len(BRANDS))]
        image = f"images/{i:05d}.jpg"
        photo = draw_product(kind, colour, sleeve, lid, size, rng)
        second = colours[stripes.integers(len(colours))] if stripes.random() < TWO_COLOUR_SHARE else colour
        if second != colour:
            photo = add_stripe(photo, second, stripes)
        with atomic_write(out / image, "wb") as f:
            photo.save(f, format="JPEG", quality=92)
        rows.append(
            {
                "id": f"{i:05d}",
                "image": image,
                "title": _title(kind, colour, sleeve, lid, brand, f"ST-{i:05d}"),
                "articleType": kind,
                "baseColour": colour,
                "colours": "|".join(c for c in colours if c in (colour, second)),
                "sleeve": sleeve,
                "lid": lid,
            }
        )
    path = out / "catalogue.csv"
    with atomic_write(path) as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    return path
