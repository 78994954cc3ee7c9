"""The synthetic world: deterministic by seed, correct teacher chains, controlled mistakes."""

from __future__ import annotations

import collections

import pytest

from data_gen.synthetic.scenes import png_bytes
from data_gen.synthetic.tasks import MISTAKES
from data_gen.synthetic.world import ALL_KINDS, PERCEPTION_KINDS, World, WorldConfig


def test_same_seed_same_world_different_seed_different_world():
  a, b, c = World(WorldConfig(image_size=64), 5), World(WorldConfig(image_size=64), 5), World(WorldConfig(), 6)
  for i in range(10):
    qa, qb = a.question(i), b.question(i)
    assert qa == qb and qa.images[0].data == qb.images[0].data
  assert [a.question(i).meta["facts"] for i in range(10)] != [c.question(i).meta["facts"] for i in range(10)]
  assert a.question(0, "train").id != a.question(0, "test").id


def test_teacher_is_right_and_mistakes_are_controlled():
  world = World(WorldConfig(image_size=64), seed=0)
  kinds, changed = collections.Counter(), collections.Counter()
  for i in range(300):
    q = world.question(i)
    kinds[q.meta["task"]] += 1
    good = world.teacher_path(q)
    assert good.final_answer == q.answer == str(q.meta["facts"]["answer"])
    assert good.steps[-1].action == "summary" and all(s.action == "continue" for s in good.steps[:-1])
    for m in MISTAKES:
      bad = world.teacher_path(q, mistake=m, sample=1)
      bad.validate(bad.id)
      assert bad.steps != good.steps, (q.id, m)
      changed[m] += bad.final_answer != q.answer
  assert set(kinds) == set(ALL_KINDS)
  for m in MISTAKES:  # most injected mistakes change the answer (a few are harmless, as in real chains)
    assert changed[m] > 0.6 * 300, (m, changed[m])


def test_images_render_the_scene():
  world = World(WorldConfig(kinds=("count",), grid=3, image_size=30, colours=("white", "red")), seed=0)
  item = world.item(0)
  img = item.image(30)
  reds = sum(1 for r in range(3) for c in range(3) if img.getpixel((c * 10 + 5, r * 10 + 5)) == (220, 30, 30))
  assert reds == item.scene.count("red")
  assert png_bytes(img)[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="unknown task kinds"):
    WorldConfig(kinds=("nope",))


def test_weighted_kinds_draw_in_proportion_and_leave_plain_worlds_alone():
  world = World(WorldConfig(kinds=("count:2", "cell_colour:1", "left_of:1"), grid=3, image_size=24, shapes=2,
                            shape_grid=3), seed=0)
  assert world.cfg.kinds == ("count", "cell_colour", "left_of") and world.cfg.weights == (2.0, 1.0, 1.0)
  kinds = collections.Counter(world.question(i).meta["task"] for i in range(600))
  assert 250 < kinds["count"] < 350 and 110 < kinds["cell_colour"] < 190 and 110 < kinds["left_of"] < 190
  plain = World(WorldConfig(kinds=("count", "left_of"), image_size=24), seed=0)
  assert plain.cfg.weights == () and {plain.question(i).meta["task"] for i in range(50)} == {"count", "left_of"}
  with pytest.raises(ValueError, match="weight"):
    WorldConfig(kinds=("count:2", "left_of"))
  with pytest.raises(ValueError, match="unknown task kinds"):
    WorldConfig(kinds=("nope:1",))


def test_cell_colour_is_read_off_the_scene_and_its_mistakes_name_another_colour():
  world = World(WorldConfig(kinds=("cell_colour",), grid=3, image_size=24), seed=4)
  wrong = collections.Counter()
  for i in range(100):
    item, q = world.item(i), world.question(i)
    row, col = (int(x) - 1 for x in q.question.rstrip("?").split("row ")[1].split(", column "))
    assert q.answer == item.scene.cells[row][col] == world.teacher_path(q).final_answer
    assert q.meta["task"] in PERCEPTION_KINDS
    for m in MISTAKES:
      bad = world.teacher_path(q, mistake=m, sample=1)
      assert bad.steps != world.teacher_path(q).steps
      wrong[m] += bad.final_answer != q.answer
  assert wrong["wrong_count"] == wrong["wrong_arithmetic"] == 100 and wrong["skipped_step"] > 50
