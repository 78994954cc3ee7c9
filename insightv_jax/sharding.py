"""Mesh construction and the ONE logical-axis rules table.

Every parameter carries logical axis names in its `axes` metadata (e.g. `("embed", "mlp")`); every
activation constraint names logical axes too. `RULES` maps each logical name to a mesh axis (or a
tuple of mesh axes, or None for replicated). A logical name missing from the table is an error,
never a silent replication.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with sharded parameters and optimizer
state), `tensor` (Megatron-style tensor parallel over heads / MLP / vocab).

Parameters stacked by `nnx.scan` have one more dimension than their names; the leading one is the
`layers` axis (never sharded).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or axes). The single source of truth for how the model is laid out.
# Every name here is used by a parameter or an activation constraint, and every name used is here
# (tests/test_sharding.py checks both ways).
RULES: dict[str, str | tuple[str, ...] | None] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
    "act_embed": None,
    "act_mlp": "tensor",
    # parameters
    "embed": "fsdp",  # the model width d of the decoder
    "vision_embed": "fsdp",  # the vision tower width
    "mlp": "tensor",  # MLP hidden width
    "heads": "tensor",  # query heads
    "kv_heads": "tensor",  # key/value heads
    "vocab": "tensor",
    "norm": None,  # LayerNorm / RMSNorm scales
    "patch": None,  # conv patch dims (kh, kw, c)
    "positions": None,  # the vision tower's position embedding table
    "layers": None,  # the stacking axis of scanned layers (added by `param_spec`)
}


class ShardingRuleError(KeyError):
  pass


def logical_to_spec(names: Sequence[str | None]) -> P:
  """`("embed", "mlp")` -> `P("fsdp", "tensor")` through RULES; None stays None."""
  out = []
  for n in names:
    if n is None:
      out.append(None)
      continue
    if n not in RULES:
      raise ShardingRuleError(f"logical axis {n!r} has no entry in insightv_jax.sharding.RULES")
    out.append(RULES[n])
  return P(*out)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh; one axis may be -1 to take the remaining devices.

  Axes are `Auto` (sharding propagates through the program; parameters and batches carry explicit
  shardings at the jit boundary).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape} does not divide the {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    if math.prod(shape) > len(devices):
      raise ValueError(f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                       f"have {len(devices)}")
    devices = devices[:math.prod(shape)]
  dev_array = np.asarray(devices).reshape(shape)
  return Mesh(dev_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def single_device_mesh() -> Mesh:
  """The default mesh of a model loaded without one: the first device only."""
  return make_mesh(1, 1, 1, devices=jax.devices()[:1])


def param_spec(var: nnx.Variable) -> P:
  """PartitionSpec of one parameter from its `axes` metadata (plus a leading `layers` if stacked)."""
  names = tuple(var.get_metadata().get("axes", ()))
  value = var.get_value() if hasattr(var, "get_value") else var.value
  ndim = len(value.shape)
  if ndim == len(names) + 1:
    names = ("layers",) + names
  if ndim != len(names):
    raise ShardingRuleError(f"parameter of shape {value.shape} has logical axes {names}")
  return logical_to_spec(names)


def state_specs(state: nnx.State) -> nnx.State:
  """The PartitionSpec tree of an NNX state (abstract or concrete)."""
  return jax.tree.map(lambda v: param_spec(v), state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
  specs = state_specs(state)
  return jax.tree.map(lambda s: NamedSharding(mesh, fit_spec(s, mesh)), specs, is_leaf=lambda x: isinstance(x, P))


def fit_spec(spec: P, mesh: Mesh) -> P:
  """Drops mesh axes of size 1 (so specs stay valid on small meshes)."""
  def keep(entry):
    if entry is None:
      return None
    axes = (entry,) if isinstance(entry, str) else tuple(entry)
    axes = tuple(a for a in axes if mesh.shape[a] > 1)
    return None if not axes else (axes[0] if len(axes) == 1 else axes)
  return P(*(keep(e) for e in spec))


def constrain(x: jax.Array, names: Iterable[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical names, only when a mesh is in scope (no-op otherwise)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  spec = logical_to_spec(tuple(names))
  return jax.lax.with_sharding_constraint(x, spec)


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
  """Puts `mesh` in scope for tracing (activation constraints resolve against it)."""
  with jax.set_mesh(mesh):
    yield mesh


def pure_dict_shardings(state: nnx.State, mesh: Mesh) -> dict:
  """NamedShardings for `nnx.to_pure_dict(state)`, keyed the same way."""
  out: dict = {}
  for path, var in nnx.to_flat_state(state):
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = NamedSharding(mesh, fit_spec(param_spec(var), mesh))
  return out


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading axis over the batch mesh axes (data x fsdp), the rest replicated."""
  return NamedSharding(mesh, fit_spec(logical_to_spec(("batch",) + (None,) * (ndim - 1)), mesh))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
