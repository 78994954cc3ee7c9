"""The synthetic visual reasoning world: deterministic questions, images and a scripted teacher.

    world = World(WorldConfig(kinds=("count",), grid=6), seed=0)
    item = world.item(17)                 # scene, image, task; item i depends only on (seed, i)
    world = World(WorldConfig(kinds=("count:2", "cell_colour:1", "left_of:1")))   # weighted kinds
    questions = world.write(root, split="train", n=1000)   # root/images/*.png + root/train.jsonl
    path = world.teacher_path(question, mistake="wrong_count", sample=2)   # a ReasoningPath record

The same question id always yields the same scene, and the teacher re-derives it from the id, so
chains can be generated in any process, in any order, and resumed.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_gen.synthetic import scenes
from data_gen.synthetic.tasks import MISTAKES, Task, sample_task
from insightv_jax.data import records

GRID_KINDS = ("count", "compare", "row_max", "cell_colour")
SHAPE_KINDS = ("shape_count", "left_of")
CHART_KINDS = ("chart_sum", "chart_range")
KNOWN_KINDS = GRID_KINDS + SHAPE_KINDS + CHART_KINDS
ALL_KINDS = tuple(k for k in KNOWN_KINDS if k != "cell_colour")  # the default mix (cell_colour came later)
PERCEPTION_KINDS = ("cell_colour", "left_of")  # answered by looking; the other kinds need several steps


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """kinds: task kinds to draw from (see tasks.py). Plain names: each scene family present is drawn equally
  often, then one of its kinds. "name:weight" entries (all or none): kinds drawn in proportion to their
  weights (`kinds` then holds the names, `weights` the weights). grid: cells per side of grid scenes;
  colours: cell/shape colours ("white" = empty cell); shapes: shapes per shape scene on a shape_grid lattice;
  bars: bars per chart; image_size: rendered side in pixels.
  """

  kinds: tuple[str, ...] = ALL_KINDS
  grid: int = 6
  colours: tuple[str, ...] = ("white", "red", "green", "blue")
  shape_grid: int = 4
  shapes: int = 6
  bars: int = 5
  image_size: int = 336
  weights: tuple[float, ...] = ()

  def __post_init__(self):
    weighted = [":" in k for k in self.kinds]
    if any(weighted):
      if not all(weighted) or self.weights:
        raise ValueError(f"WorldConfig.kinds {self.kinds}: give every kind a weight ('name:weight') or none")
      names, weights = zip(*(k.split(":", 1) for k in self.kinds))
      object.__setattr__(self, "kinds", tuple(names))
      object.__setattr__(self, "weights", tuple(float(w) for w in weights))
    unknown = set(self.kinds) - set(KNOWN_KINDS)
    if unknown:
      raise ValueError(f"WorldConfig.kinds: unknown task kinds {sorted(unknown)}; known: {KNOWN_KINDS}")
    if self.weights and (len(self.weights) != len(self.kinds) or min(self.weights) < 0 or not sum(self.weights)):
      raise ValueError(f"WorldConfig.weights {self.weights}: one non-negative weight per kind, not all zero")


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  scene: object
  task: Task
  build: object  # mistake, rng -> Task

  def image(self, size: int):
    return scenes.render(self.scene, size)


class World:
  def __init__(self, cfg: WorldConfig = WorldConfig(), seed: int = 0):
    self.cfg, self.seed = cfg, seed

  def item(self, index: int, split: str = "train") -> Item:
    salt = {"train": 0, "val": 1, "test": 2}.get(split, 3)
    rng = np.random.default_rng([self.seed, salt, index])
    c = self.cfg
    kinds = c.kinds
    if c.weights:
      p = np.asarray(c.weights) / sum(c.weights)
      kinds = (c.kinds[rng.choice(len(c.kinds), p=p)],)
    families = [f for f, members in (("grid", GRID_KINDS), ("shapes", SHAPE_KINDS), ("chart", CHART_KINDS))
                if set(members) & set(kinds)]
    family = families[rng.integers(len(families))]
    if family == "grid":
      scene = scenes.sample_grid(rng, c.grid, c.grid, c.colours)
    elif family == "shapes":
      scene = scenes.sample_shapes(rng, c.shape_grid, c.shapes, tuple(x for x in c.colours if x != "white"))
    else:
      scene = scenes.sample_chart(rng, c.bars)
    _, build = sample_task(rng, scene, kinds, c.colours)
    return Item(f"{split}-{self.seed}-{index:07d}", scene, build(None, None), build)

  def question(self, index: int, split: str = "train", image_path: str | None = None,
               image_bytes: bytes | None = None) -> records.Question:
    it = self.item(index, split)
    ref = records.ImageRef(path=image_path) if image_path else records.ImageRef(
        data=image_bytes if image_bytes is not None else scenes.png_bytes(it.image(self.cfg.image_size)))
    return records.Question(id=it.id, images=(ref,), question=it.task.question, answer=it.task.answer,
                            choices=it.task.choices, source="synthetic",
                            meta={"task": it.task.kind, "world_seed": self.seed, "split": split, "index": index,
                                  "facts": it.task.facts})

  def write(self, root: str, split: str, n: int) -> list[records.Question]:
    """Renders n questions of `split` into root/images/ and writes root/{split}.jsonl (relative paths)."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    out = []
    for i in range(n):
      it = self.item(i, split)
      rel = f"images/{it.id}.png"
      it.image(self.cfg.image_size).save(os.path.join(root, rel))
      out.append(self.question(i, split, image_path=rel))
    records.write_jsonl(os.path.join(root, f"{split}.jsonl"), out)
    return out

  def teacher_task(self, question: records.Question, mistake: str | None = None, sample: int = 0) -> Task:
    """The teacher's chain for a question of this world; `mistake` in MISTAKES makes a flawed one."""
    meta = question.meta
    if meta.get("world_seed") != self.seed or "index" not in meta:
      raise ValueError(f"question {question.id}: not generated by this world (seed {self.seed})")
    it = self.item(meta["index"], meta["split"])
    if mistake is None:
      return it.task
    if mistake not in MISTAKES:
      raise ValueError(f"mistake {mistake!r} is not one of {MISTAKES}")
    return it.build(mistake, np.random.default_rng([self.seed, meta["index"], sample, 7]))

  def teacher_path(self, question: records.Question, mistake: str | None = None, sample: int = 0
                   ) -> records.ReasoningPath:
    task = self.teacher_task(question, mistake, sample)
    steps = tuple(records.Step(s.title, s.content, "continue") for s in task.steps)
    steps = steps[:-1] + (dataclasses.replace(steps[-1], action="summary"),)
    return records.ReasoningPath(id=f"{question.id}/teacher-{mistake or 'correct'}-{sample}",
                                 question_id=question.id, steps=steps, final_answer=task.answer,
                                 meta={"generator": "scripted", "mistake": mistake})
