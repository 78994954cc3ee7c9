"""The layout registry: a folder's layout is detected, specs resolve, bad specs say what is wrong."""

import json

import numpy as np
import pytest
from flax import nnx

from insightv_jax.checkpoints import LAYOUTS, load_model, parse_spec, read_config, save_model
from insightv_jax.model.llava import LlavaNext


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_cfg):
  root = tmp_path_factory.mktemp("layouts")
  model = LlavaNext(tiny_cfg, rngs=nnx.Rngs(0))
  for layout in LAYOUTS:
    save_model(model, str(root / layout), layout=layout,
               **({"vision_tower": "/models/tiny-tower"} if layout == "llava" else {}))  # the tower is no preset
  return model, root


def _params(model):
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_round_trips_and_is_detected(saved, layout):
  model, root = saved
  folder = str(root / layout)
  assert parse_spec(folder)[0].name == layout  # a bare folder: detected
  assert parse_spec(f"{layout}:{folder}")[0].name == layout
  assert read_config(folder).text == model.cfg.text
  model_xla = load_model(folder, attention="xla")
  assert model_xla.cfg.attention == "xla" and model_xla.language_model.kernel.name == "xla"  # a runtime knob
  loaded, want = _params(model_xla), _params(model)
  assert loaded.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(loaded[k], want[k], err_msg=k)


def test_bad_specs_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such folder"):
    parse_spec(str(tmp_path / "nowhere"))
  (tmp_path / "junk").mkdir()
  with open(tmp_path / "junk" / "config.json", "w") as f:
    json.dump({"model_type": "bert"}, f)
  with pytest.raises(ValueError, match="matches no checkpoint layout.*'hf:'.*'params:'"):
    parse_spec(str(tmp_path / "junk"))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    read_config(f"params:{tmp_path / 'empty'}")
  with pytest.raises(ValueError, match="layout='onnx'"):
    save_model(None, str(tmp_path / "x"), layout="onnx")
