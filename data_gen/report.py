"""The data-generation report: counts per stage, drop reasons, a score histogram (PNG) and example chains
rendered with their images (HTML)."""

from __future__ import annotations

import base64
import collections
import html
import os

from PIL import Image, ImageDraw

from insightv_jax.data import prompts


def histogram_png(values, path: str, bins: int = 10, size=(480, 240), title: str = "reasoning scores"):
  """A bar chart of `values` in [0, 100] drawn with Pillow (no plotting library needed)."""
  counts = [0] * bins
  for v in values:
    counts[min(bins - 1, int(v / (100 / bins)))] += 1
  w, h = size
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  top = max(counts) or 1
  margin, bar_w = 30, (w - 60) / bins
  for i, c in enumerate(counts):
    x0 = margin + i * bar_w
    y0 = h - margin - (h - 2 * margin) * c / top
    d.rectangle((x0 + 2, y0, x0 + bar_w - 2, h - margin), fill=(40, 90, 200))
    d.text((x0 + 4, h - margin + 4), f"{int(i * 100 / bins)}", fill="black")
    if c:
      d.text((x0 + 4, y0 - 12), str(c), fill="black")
  d.text((margin, 6), f"{title} (n={len(values)})", fill="black")
  img.save(path)


def write(out_dir: str, *, questions, paths, drops, datasets, band, image_root, examples: int = 6) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  bands = collections.Counter(band(p) for p in paths)
  counts = {
      "questions": len(questions),
      "paths": len(paths),
      "paths_dropped": dict(drops),
      "answer_correct": sum(1 for p in paths if p.scores.get("answer_correct")),
      "bands": dict(bands),
      "datasets": {k: len(v) for k, v in datasets.items()},
  }
  scores = [p.scores["reasoning"] for p in paths if "reasoning" in p.scores]
  histogram_png(scores, os.path.join(out_dir, "scores.png"))
  qmap = {q.id: q for q in questions}
  lines = ["# Data generation report", "", "| stage | count |", "|---|---|",
           f"| questions | {counts['questions']} |", f"| paths kept | {counts['paths']} |",
           f"| paths dropped | {sum(drops.values())} {dict(drops) or ''} |",
           f"| correct final answer | {counts['answer_correct']} |"]
  lines += [f"| band {b} | {n} |" for b, n in sorted(bands.items())]
  lines += [f"| dataset {k} | {n} |" for k, n in counts["datasets"].items()]
  lines += ["", "![scores](scores.png)", "", "Example chains: examples.html"]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  parts = ["<html><body><h1>Example reasoning paths</h1>"]
  for p in sorted(paths, key=lambda p: p.id)[:examples]:
    q = qmap.get(p.question_id)
    img = ""
    if q is not None and q.images:
      data = q.images[0].read(image_root)
      img = f'<img width="160" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
    parts.append(f"<h3>{html.escape(p.id)} [{band(p)}; scores {html.escape(str(p.scores))}]</h3>{img}"
                 f"<p><b>{html.escape(q.question if q else '')}</b> (gold {html.escape(q.answer if q else '')},"
                 f" final {html.escape(p.final_answer)})</p><pre>{html.escape(prompts.format_chain(p.steps))}</pre>")
  parts.append("</body></html>")
  with open(os.path.join(out_dir, "examples.html"), "w") as f:
    f.write("\n".join(parts))
  return counts
