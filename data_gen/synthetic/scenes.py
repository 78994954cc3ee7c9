"""Procedural scenes with known ground truth, and their rendering to images.

Three scene kinds:
  GridScene   an R x C grid of coloured cells (one colour per cell; "white" is an empty cell)
  ShapeScene  coloured circles / squares / triangles at distinct grid positions
  ChartScene  a bar chart: labelled bars with integer values

Everything is a pure function of a `numpy.random.Generator`, so a seed fixes the scene and its image.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw

PALETTE = {
    "white": (255, 255, 255), "red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
    "yellow": (235, 200, 20), "purple": (140, 50, 170), "black": (0, 0, 0), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")


@dataclasses.dataclass(frozen=True)
class GridScene:
  cells: tuple[tuple[str, ...], ...]  # [row][col] colour names

  @property
  def rows(self) -> int:
    return len(self.cells)

  @property
  def cols(self) -> int:
    return len(self.cells[0])

  def count(self, colour: str, row: int | None = None) -> int:
    rows = self.cells if row is None else [self.cells[row]]
    return sum(c == colour for r in rows for c in r)


@dataclasses.dataclass(frozen=True)
class Shape:
  kind: str
  colour: str
  row: int
  col: int


@dataclasses.dataclass(frozen=True)
class ShapeScene:
  size: int  # shapes sit on a size x size lattice
  shapes: tuple[Shape, ...]


@dataclasses.dataclass(frozen=True)
class ChartScene:
  labels: tuple[str, ...]
  values: tuple[int, ...]
  colour: str = "blue"


def sample_grid(rng: np.random.Generator, rows: int, cols: int, colours: tuple[str, ...]) -> GridScene:
  idx = rng.integers(0, len(colours), (rows, cols))
  return GridScene(tuple(tuple(colours[i] for i in row) for row in idx))


def sample_shapes(rng: np.random.Generator, size: int, n: int, colours: tuple[str, ...]) -> ShapeScene:
  cells = rng.choice(size * size, size=n, replace=False)
  shapes = tuple(Shape(SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(len(colours))], int(c) // size,
                       int(c) % size) for c in cells)
  return ShapeScene(size, shapes)


def sample_chart(rng: np.random.Generator, n_bars: int, max_value: int = 9) -> ChartScene:
  labels = tuple(chr(ord("A") + i) for i in range(n_bars))
  return ChartScene(labels, tuple(int(v) for v in rng.integers(1, max_value + 1, n_bars)))


# ------------------------------------------------------------------------------------------- render

def render(scene, image_size: int) -> Image.Image:
  """Draws a scene on a square RGB canvas of image_size pixels."""
  img = Image.new("RGB", (image_size, image_size), PALETTE["white"])
  draw = ImageDraw.Draw(img)
  if isinstance(scene, GridScene):
    ch, cw = image_size / scene.rows, image_size / scene.cols
    for r, row in enumerate(scene.cells):
      for c, colour in enumerate(row):
        box = (round(c * cw), round(r * ch), round((c + 1) * cw) - 1, round((r + 1) * ch) - 1)
        draw.rectangle(box, fill=PALETTE[colour], outline=PALETTE["gray"] if image_size >= 96 else None)
  elif isinstance(scene, ShapeScene):
    cell = image_size / scene.size
    pad = max(1, round(cell * 0.15))
    for s in scene.shapes:
      x0, y0 = round(s.col * cell) + pad, round(s.row * cell) + pad
      x1, y1 = round((s.col + 1) * cell) - pad, round((s.row + 1) * cell) - pad
      fill = PALETTE[s.colour]
      if s.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
      elif s.kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
      else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
  elif isinstance(scene, ChartScene):
    n, top = len(scene.values), max(scene.values)
    margin = image_size * 0.08
    width = (image_size - 2 * margin) / n
    for i, v in enumerate(scene.values):
      x0 = margin + i * width + width * 0.15
      x1 = margin + (i + 1) * width - width * 0.15
      y1 = image_size - margin
      y0 = y1 - (image_size - 2 * margin) * v / max(top, 9)
      draw.rectangle((round(x0), round(y0), round(x1), round(y1)), fill=PALETTE[scene.colour])
    draw.line((margin, image_size - margin, image_size - margin, image_size - margin), fill=PALETTE["black"])
  else:
    raise TypeError(f"cannot render {type(scene).__name__}")
  return img


def png_bytes(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()
