"""Multi-step questions over synthetic scenes, and a scripted teacher that writes their reasoning chains.

Every task returns a `Task`: the question (with choices for multiple choice), the answer, and the
correct chain as structured steps. The teacher can corrupt a chain on purpose:
  wrong_count       one reading is off by one and the error propagates to the answer
  skipped_step      one intermediate step is left out (its contribution is lost)
  wrong_arithmetic  one running total / sum is computed wrongly
A corrupted chain's final answer follows from its (wrong) steps, as a fallible model's would.

Task kinds:  count (grid, numeric)  compare (grid, multiple choice)  row_max (grid, multiple choice)
             cell_colour (grid, one colour word: perception)
             shape_count (shapes, numeric)  left_of (shapes, yes/no as multiple choice: perception)
             chart_sum (chart, numeric)  chart_range (chart, numeric: largest - smallest)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_gen.synthetic.scenes import ChartScene, GridScene, ShapeScene

MISTAKES = ("wrong_count", "skipped_step", "wrong_arithmetic")


@dataclasses.dataclass(frozen=True)
class TaskStep:
  title: str
  content: str


@dataclasses.dataclass(frozen=True)
class Task:
  kind: str
  question: str
  answer: str
  choices: tuple[str, ...] | None
  steps: tuple[TaskStep, ...]
  facts: dict  # ground truth the programmatic scorer checks steps against


def _letter(i: int) -> str:
  return chr(ord("A") + i)


def _corrupt_index(rng, n, prefer=()) -> int:
  """A step to corrupt: one of `prefer` (steps whose loss changes the answer) when there are any."""
  prefer = list(prefer)
  return int(prefer[rng.integers(len(prefer))]) if prefer else int(rng.integers(n))


# -------------------------------------------------------------------------------------------- grid

def grid_count(scene: GridScene, colour: str, mistake: str | None = None, rng=None) -> Task:
  """Cell by cell, row by row, with one running count: "Row 1, red: blue 0, red 1, red 2, white 2." (each step
  names the colour it counts: the comparison a reader makes at every cell has its colour a few tokens back)

  Mistakes: wrong_count misreads one cell (names the wrong colour and counts it), skipped_step leaves out a
  row that has the colour, wrong_arithmetic slips the running count by one at one cell.
  """
  counts = [scene.count(colour, r) for r in range(scene.rows)]
  prefer = [r for r in range(scene.rows) if counts[r]] if mistake == "skipped_step" else ()
  bad = _corrupt_index(rng, scene.rows, prefer) if mistake else -1
  bad_col = int(rng.integers(scene.cols)) if mistake else -1
  others = [c for c in ("white", "red", "green", "blue", "yellow") if c != colour]
  steps, total = [], 0
  for r, row in enumerate(scene.cells):
    if mistake == "skipped_step" and r == bad:
      continue
    cells = []
    for c, seen in enumerate(row):
      if mistake == "wrong_count" and (r, c) == (bad, bad_col):
        seen = others[int(rng.integers(len(others)))] if seen == colour else colour
      total += seen == colour
      if mistake == "wrong_arithmetic" and (r, c) == (bad, bad_col):
        total += 1 if total == 0 or rng.random() < 0.5 else -1
      cells.append(f"{seen} {total}")
    steps.append(TaskStep(f"Row {r + 1}, {colour}", ", ".join(cells) + "."))
  steps.append(TaskStep("Total", f"There are {total} {colour} cells."))
  return Task("count", f"How many {colour} cells are in the grid?", str(total), None, tuple(steps),
              {"row_counts": counts, "answer": sum(counts)})


def grid_compare(scene: GridScene, a: str, b: str, mistake: str | None = None, rng=None) -> Task:
  ca, cb = grid_count(scene, a, mistake, rng), grid_count(scene, b)
  na, nb = int(ca.answer), int(cb.answer)
  choices = (f"more {a}", f"more {b}", "the same number")
  answer = 0 if na > nb else 1 if nb > na else 2
  steps = list(ca.steps[:-1]) + [TaskStep(f"Total {a}", f"There are {na} {a} cells.")]
  steps += list(cb.steps[:-1]) + [TaskStep(f"Total {b}", f"There are {nb} {b} cells.")]
  steps.append(TaskStep("Compare", f"{na} {a} versus {nb} {b}: {choices[answer]}."))
  true_a, true_b = scene.count(a), scene.count(b)
  truth = 0 if true_a > true_b else 1 if true_b > true_a else 2
  return Task("compare", f"Are there more {a} cells or more {b} cells in the grid?", _letter(answer), choices,
              tuple(steps), {"counts": {a: true_a, b: true_b}, "answer": _letter(truth)})


def grid_row_max(scene: GridScene, colour: str, mistake: str | None = None, rng=None) -> Task:
  counts = [scene.count(colour, r) for r in range(scene.rows)]
  seen = list(counts)
  top = max(range(scene.rows), key=lambda r: (counts[r], -r))
  bad = _corrupt_index(rng, scene.rows, [top] if mistake == "skipped_step" else ()) if mistake else -1
  if mistake in ("wrong_count", "wrong_arithmetic"):
    seen[bad] += 2
  steps = []
  for r, row in enumerate(scene.cells):
    if mistake == "skipped_step" and r == bad:
      continue
    steps.append(TaskStep(f"Row {r + 1}", f"Row {r + 1} is {', '.join(row)}. It has {seen[r]} {colour}."))
  considered = [r for r in range(scene.rows) if not (mistake == "skipped_step" and r == bad)]
  best = max(considered, key=lambda r: (seen[r], -r))
  steps.append(TaskStep("Most", f"The most {colour} cells are in row {best + 1} ({seen[best]})."))
  choices = tuple(f"row {r + 1}" for r in range(scene.rows))
  truth = max(range(scene.rows), key=lambda r: (counts[r], -r))
  return Task("row_max", f"Which row has the most {colour} cells (the top-most if tied)?", _letter(best), choices,
              tuple(steps), {"row_counts": counts, "answer": _letter(truth)})


def grid_cell_colour(scene: GridScene, row: int, col: int, mistake: str | None = None, rng=None) -> Task:
  """Perception: one cell's colour. "Row 2 is green, red, white." then "Column 3 of row 2 is white."

  Mistakes (each names a wrong colour): wrong_count misreads the cell, skipped_step leaves out the row reading
  and takes the cell of a neighbouring row, wrong_arithmetic miscounts the columns and takes a neighbouring
  cell of the row (another colour altogether when none differs).
  """
  truth = scene.cells[row][col]
  row_cells = list(scene.cells[row])
  seen = truth
  if mistake == "wrong_count":
    seen = _other_colour(truth, rng)
  elif mistake == "skipped_step":
    seen = scene.cells[row - 1 if row > 0 else row + 1][col] if scene.rows > 1 else _other_colour(truth, rng)
  elif mistake == "wrong_arithmetic":
    near = [row_cells[c] for c in (col - 1, col + 1) if 0 <= c < scene.cols and row_cells[c] != truth]
    seen = near[int(rng.integers(len(near)))] if near else _other_colour(truth, rng)
  if mistake in ("wrong_count", "wrong_arithmetic"):
    row_cells[col] = seen
  steps = [TaskStep(f"Row {row + 1}", f"Row {row + 1} is {', '.join(row_cells)}.")]
  if mistake == "skipped_step":
    steps = []
  steps.append(TaskStep(f"Column {col + 1}", f"Column {col + 1} of row {row + 1} is {seen}."))
  return Task("cell_colour", f"What colour is the cell in row {row + 1}, column {col + 1}?", seen, None,
              tuple(steps), {"answer": truth})


def _other_colour(colour: str, rng) -> str:
  others = [c for c in ("white", "red", "green", "blue") if c != colour]
  return others[int(rng.integers(len(others)))]


# ------------------------------------------------------------------------------------------ shapes

def shape_count(scene: ShapeScene, kind: str, colour: str, mistake: str | None = None, rng=None) -> Task:
  ordered = sorted(scene.shapes, key=lambda s: (s.row, s.col))
  steps, total = [], 0
  hits = [i for i, s in enumerate(ordered) if s.kind == kind and s.colour == colour]
  bad = _corrupt_index(rng, len(ordered), hits if mistake == "skipped_step" else ()) if mistake else -1
  for i, s in enumerate(ordered):
    hit = int(s.kind == kind and s.colour == colour)
    if mistake == "skipped_step" and i == bad:
      continue
    if mistake == "wrong_count" and i == bad:
      hit = 1 - hit
    new_total = total + hit
    if mistake == "wrong_arithmetic" and i == bad:
      new_total += 1
    steps.append(TaskStep(f"Shape {i + 1}", f"At row {s.row + 1}, column {s.col + 1} there is a {s.colour} "
                                            f"{s.kind}. {'It counts' if hit else 'It does not count'}. "
                                            f"Running total: {new_total}."))
    total = new_total
  steps.append(TaskStep("Total", f"There are {total} {colour} {kind}s."))
  truth = sum(s.kind == kind and s.colour == colour for s in scene.shapes)
  return Task("shape_count", f"How many {colour} {kind}s are there?", str(total), None, tuple(steps),
              {"answer": truth})


def shape_left_of(scene: ShapeScene, a: int, b: int, mistake: str | None = None, rng=None) -> Task:
  sa, sb = scene.shapes[a], scene.shapes[b]
  col_a, col_b = sa.col, sb.col
  if mistake:
    col_a = col_a + (1 if col_a <= col_b else -1) * (abs(col_a - col_b) + 1)
  steps = (TaskStep("Locate first", f"The {sa.colour} {sa.kind} is in column {col_a + 1}."),
           TaskStep("Locate second", f"The {sb.colour} {sb.kind} is in column {col_b + 1}."),
           TaskStep("Compare", f"Column {col_a + 1} is {'left of' if col_a < col_b else 'not left of'} "
                               f"column {col_b + 1}."))
  answer = "A" if col_a < col_b else "B"
  return Task("left_of", f"Is the {sa.colour} {sa.kind} to the left of the {sb.colour} {sb.kind}?", answer,
              ("yes", "no"), steps, {"answer": "A" if sa.col < sb.col else "B"})


# ------------------------------------------------------------------------------------------- chart

def chart_sum(scene: ChartScene, mistake: str | None = None, rng=None) -> Task:
  vals = list(scene.values)
  bad = _corrupt_index(rng, len(vals)) if mistake else -1
  steps, total = [], 0
  for i, (label, v) in enumerate(zip(scene.labels, vals)):
    if mistake == "skipped_step" and i == bad:
      continue
    if mistake == "wrong_count" and i == bad:
      v = v + 1 if v < 9 else v - 1
    new_total = total + v
    if mistake == "wrong_arithmetic" and i == bad:
      new_total += 1
    steps.append(TaskStep(f"Bar {label}", f"Bar {label} has value {v}. Running sum: {new_total}."))
    total = new_total
  steps.append(TaskStep("Sum", f"The bars add up to {total}."))
  return Task("chart_sum", "What is the sum of all bar values in the chart?", str(total), None, tuple(steps),
              {"values": vals, "answer": sum(vals)})


def chart_range(scene: ChartScene, mistake: str | None = None, rng=None) -> Task:
  vals = list(scene.values)
  seen = list(vals)
  extremes = [vals.index(max(vals)), vals.index(min(vals))]
  bad = _corrupt_index(rng, len(vals), extremes) if mistake else -1
  if mistake == "wrong_count":
    seen[bad] = seen[bad] + 1 if seen[bad] < 9 else seen[bad] - 1
  steps = [TaskStep(f"Bar {label}", f"Bar {label} has value {v}.") for i, (label, v) in
           enumerate(zip(scene.labels, seen)) if not (mistake == "skipped_step" and i == bad)]
  kept = [v for i, v in enumerate(seen) if not (mistake == "skipped_step" and i == bad)]
  hi, lo = max(kept), min(kept)
  diff = hi - lo + (1 if mistake == "wrong_arithmetic" else 0)
  steps.append(TaskStep("Extremes", f"The largest value is {hi} and the smallest is {lo}."))
  steps.append(TaskStep("Difference", f"{hi} - {lo} = {diff}."))
  return Task("chart_range", "What is the difference between the largest and the smallest bar value?", str(diff),
              None, tuple(steps), {"values": vals, "answer": max(vals) - min(vals)})


def sample_task(rng: np.random.Generator, scene, kinds: tuple[str, ...], colours: tuple[str, ...]):
  """A random task kind that fits the scene; returns (kind, builder(mistake, rng) -> Task)."""
  if isinstance(scene, GridScene):
    coloured = [c for c in colours if c != "white"]
    options = [k for k in ("count", "compare", "row_max", "cell_colour") if k in kinds
               and (k != "compare" or len(coloured) > 1)]
    kind = options[rng.integers(len(options))]
    a, b = rng.permutation(len(coloured))[:2] if len(coloured) > 1 else (0, 0)
    ca, cb = coloured[a], coloured[b]
    if kind == "cell_colour":  # drawn only for this kind: the other kinds' questions stay as they were
      cell = int(rng.integers(scene.rows * scene.cols))
      build = lambda m, r: grid_cell_colour(scene, cell // scene.cols, cell % scene.cols, m, r)
    else:
      build = {"count": lambda m, r: grid_count(scene, ca, m, r),
               "compare": lambda m, r: grid_compare(scene, ca, cb, m, r),
               "row_max": lambda m, r: grid_row_max(scene, ca, m, r)}[kind]
  elif isinstance(scene, ShapeScene):
    options = [k for k in ("shape_count", "left_of") if k in kinds]
    kind = options[rng.integers(len(options))]
    target = scene.shapes[rng.integers(len(scene.shapes))]
    i, j = rng.choice(len(scene.shapes), 2, replace=False)
    build = {"shape_count": lambda m, r: shape_count(scene, target.kind, target.colour, m, r),
             "left_of": lambda m, r: shape_left_of(scene, int(i), int(j), m, r)}[kind]
  else:
    options = [k for k in ("chart_sum", "chart_range") if k in kinds]
    kind = options[rng.integers(len(options))]
    build = {"chart_sum": lambda m, r: chart_sum(scene, m, r),
             "chart_range": lambda m, r: chart_range(scene, m, r)}[kind]
  return kind, build
