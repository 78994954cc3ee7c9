"""The logical-axis rules table and the mesh.

Given tiny models of every supported family (LLaMA / Qwen2 text, CLIP / SigLIP vision, unrolled and scanned
layers), when their parameters get partition specs and a forward pass is traced under a mesh, then every
logical name they use is a key of `sharding.RULES` and every key is used by something; a name missing from
the table is an error, never a silent replication. `make_mesh` fills the devices with its -1 axis and
refuses shapes that do not fit; `fit_spec` drops mesh axes of size 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from insightv_jax import sharding
from insightv_jax.model import anyres
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import abstract_model

needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices; tests/conftest.py sets them")

# (text, vision, scan): each family and each layer layout at least once.
FAMILIES = [("llama", "clip", False), ("qwen2", "siglip", True), ("llama", "siglip", True), ("qwen2", "clip", False)]


def tiny_config(tiny: LlavaConfig, text: str, vision: str, scan: bool) -> LlavaConfig:
  """The tiny preset with the given families; LLaMA with biases, Qwen2 tied, SigLIP keeping all tokens."""
  if text == "llama":
    text_cfg = dataclasses.replace(tiny.text, attention_bias=True, mlp_bias=True)
  else:
    text_cfg = dataclasses.replace(tiny.text, model_type="qwen2", tie_word_embeddings=True)
  cfg = tiny.replace(text=text_cfg, scan_layers=scan)
  if vision == "siglip":
    cfg = cfg.replace(vision=dataclasses.replace(tiny.vision, model_type="siglip_vision_model",
                                                 hidden_act="gelu_pytorch_tanh"),
                      vision_feature_select_strategy="full")
  return cfg


@pytest.fixture
def logical_names(monkeypatch):
  """The set of logical names that go through `sharding.logical_to_spec` while the fixture is alive."""
  seen: set[str] = set()
  original = sharding.logical_to_spec

  def recording(names):
    seen.update(n for n in names if n is not None)
    return original(names)

  monkeypatch.setattr(sharding, "logical_to_spec", recording)
  return seen


def trace_forward(cfg: LlavaConfig, mesh) -> None:
  """Traces (without computing) a forward pass over two images and a text row, with `mesh` in scope."""
  graphdef, state = nnx.split(abstract_model(cfg))
  v = cfg.vision
  tiles = anyres.max_patches(cfg.image_grid_pinpoints, v.image_size)
  ids = jax.ShapeDtypeStruct((4, 64), jnp.int32)
  pixels = jax.ShapeDtypeStruct((2, tiles, 3, v.image_size, v.image_size), jnp.float32)
  sizes = jax.ShapeDtypeStruct((2, 2), jnp.int32)
  with sharding.use_mesh(mesh):
    out = jax.eval_shape(lambda s, i, p, z: nnx.merge(graphdef, s)(i, p, z), state, ids, pixels, sizes)
  assert out.shape == (4, 64, cfg.text.vocab_size)


# ------------------------------------------------------------------------------------------ RULES coverage


@needs_8
def test_every_logical_name_in_use_is_a_rule_and_every_rule_is_in_use(tiny_cfg, logical_names):
  """Parameters (with the `layers` axis of scanned stacks), activation constraints and the batch layout."""
  mesh = sharding.make_mesh(2, 2, 2)
  param_names, activation_names = set(), set()
  for family in FAMILIES:
    cfg = tiny_config(tiny_cfg, *family)
    sharding.state_specs(nnx.state(abstract_model(cfg)))
    param_names |= logical_names
    logical_names.clear()
    trace_forward(cfg, mesh)
    activation_names |= logical_names
    logical_names.clear()
  sharding.batch_sharding(mesh, 2)
  activation_names |= logical_names
  assert "layers" in param_names and "batch" in activation_names
  assert set(sharding.RULES) == param_names | activation_names, (
      f"unused rules: {sorted(set(sharding.RULES) - param_names - activation_names)}")


def test_an_unknown_logical_name_is_an_error():
  with pytest.raises(sharding.ShardingRuleError, match="no_such_axis"):
    sharding.logical_to_spec(("embed", "no_such_axis"))
  assert issubclass(sharding.ShardingRuleError, KeyError)


def test_a_parameter_without_logical_names_is_an_error():
  """A new parameter that forgot its `axes` metadata fails loudly instead of being replicated."""
  with pytest.raises(sharding.ShardingRuleError):
    sharding.param_spec(nnx.Param(jnp.zeros((4, 8))))
  with pytest.raises(sharding.ShardingRuleError):  # names for fewer dimensions than the array has (beyond `layers`)
    sharding.param_spec(nnx.Param(jnp.zeros((2, 4, 8)), axes=("embed",)))
  assert sharding.param_spec(nnx.Param(jnp.zeros((3, 4, 8)), axes=("embed", "mlp"))) == P(None, "fsdp", "tensor")


@needs_8
def test_an_unknown_name_in_an_activation_constraint_is_an_error():
  x = jnp.zeros((8, 4))
  assert sharding.constrain(x, ("no_such_axis", None)) is x  # no mesh in scope: a no-op
  with sharding.use_mesh(sharding.make_mesh(2, 2, 2)):
    with pytest.raises(sharding.ShardingRuleError, match="no_such_axis"):
      jax.jit(lambda y: sharding.constrain(y, ("no_such_axis", None)))(x)


# ------------------------------------------------------------------------------------------ mesh


def mesh_shape(mesh) -> tuple[int, int, int]:
  return tuple(mesh.shape[a] for a in sharding.MESH_AXES)


@needs_8
@pytest.mark.parametrize("axes, shape", [
    (dict(), (1, 8, 1)),  # the default: all devices on fsdp
    (dict(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
    (dict(data=-1, fsdp=1, tensor=4), (2, 1, 4)),
    (dict(data=2, fsdp=4, tensor=-1), (2, 4, 1)),
], ids=["default", "fsdp=-1", "data=-1", "tensor=-1"])
def test_make_mesh_fills_the_devices_with_the_minus_one_axis(axes, shape):
  mesh = sharding.make_mesh(**axes, devices=jax.devices()[:8])
  assert mesh.axis_names == sharding.MESH_AXES
  assert mesh_shape(mesh) == shape
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices()[:8])


@needs_8
@pytest.mark.parametrize("axes, message", [
    (dict(data=3, fsdp=-1, tensor=1), "does not divide"),
    (dict(data=-1, fsdp=-1, tensor=2), "at most one axis"),
    (dict(data=2, fsdp=2, tensor=4), "needs 16 devices"),
], ids=["not-dividing", "two-minus-ones", "too-many"])
def test_make_mesh_rejects_shapes_that_do_not_fit(axes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(**axes, devices=jax.devices()[:8])


@needs_8
def test_a_mesh_smaller_than_the_devices_takes_the_first_ones():
  mesh = sharding.make_mesh(1, 2, 2, devices=jax.devices()[:8])
  assert mesh_shape(mesh) == (1, 2, 2)
  assert [d.id for d in mesh.devices.flat] == [d.id for d in jax.devices()[:4]]


# ------------------------------------------------------------------------------------------ fit_spec


@needs_8
@pytest.mark.parametrize("shape, want", [
    ((1, 8, 1), P("fsdp", None, None)),  # batch ("data", "fsdp") keeps fsdp only; tensor (size 1) goes
    ((2, 4, 1), P(("data", "fsdp"), None, None)),
    ((2, 1, 4), P("data", "tensor", None)),
    ((2, 2, 2), P(("data", "fsdp"), "tensor", None)),
], ids=["1x8x1", "2x4x1", "2x1x4", "2x2x2"])
def test_fit_spec_drops_mesh_axes_of_size_one(shape, want):
  mesh = sharding.make_mesh(*shape, devices=jax.devices()[:8])
  assert sharding.fit_spec(P(("data", "fsdp"), "tensor", None), mesh) == want


def test_on_one_device_everything_is_replicated(tiny_cfg):
  """A model loaded without a mesh: every parameter's sharding is fully replicated on the first device."""
  mesh = sharding.single_device_mesh()
  shardings = sharding.state_shardings(nnx.state(abstract_model(tiny_config(tiny_cfg, "llama", "clip", True))), mesh)
  specs = [s.spec for s in jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))]
  assert specs and all(all(e is None for e in spec) for spec in specs)
  assert sharding.batch_sharding(mesh, 3).spec == P(None, None, None)
  assert mesh.devices.size == 1
