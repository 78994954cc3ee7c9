"""Small NNX building blocks shared by the vision tower, the projector and the decoder.

Every parameter is created with logical axis names (`axes` metadata, see `insightv_jax.sharding`).
Parameters are stored in `param_dtype` and cast to the compute `dtype` where they are used.

Notation: b batch, t tokens, d model width, f MLP width, v vocabulary.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = Sequence[str | None]


def _normal(stddev: float):
  def init(key, shape, dtype):
    return stddev * jax.random.normal(key, shape, dtype)
  return init


def _token_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., i] @ w [i, o] -> [..., o], with all leading (token) axes flattened into one first.

  Then the weight gradient is one contraction over every token, x[n, i]^T @ dy[n, o], instead of a
  contraction over two axes (b, t). With two, XLA's CPU backend moved the activations into transposed
  layouts and fused elementwise backward ops into those transposes; flattened, the benchmark train
  step went from 2.44 s to 1.68 s (benchmarks/train_step.py). It costs nothing elsewhere: a reshape
  of contiguous leading axes is free, and the batch sharding carries over to the merged axis.
  """
  y = jnp.dot(x.reshape(-1, x.shape[-1]), w)
  return y.reshape(x.shape[:-1] + (w.shape[-1],))


class Dense(nnx.Module):
  """y = x @ kernel (+ bias). kernel: [in, out] with logical axes `axes`."""

  def __init__(self, in_features: int, out_features: int, *, axes: Axes, use_bias: bool, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32, stddev: float | None = None):
    stddev = 1.0 / math.sqrt(in_features) if stddev is None else stddev
    self.kernel = nnx.Param(_normal(stddev)(rngs.params(), (in_features, out_features), param_dtype),
                            axes=tuple(axes))
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), axes=(axes[-1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., in] -> [..., out]."""
    y = _token_matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, statistics in fp32."""

  def __init__(self, dim: int, *, eps: float, axis_name: str = "norm", dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), axes=(axis_name,))
    self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), axes=(axis_name,))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


class RMSNorm(nnx.Module):
  """LLaMA RMSNorm: x / rms(x) * scale, computed in fp32 and cast back (as transformers does)."""

  def __init__(self, dim: int, *, eps: float, dtype=jnp.float32, param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), axes=("norm",))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), -1, keepdims=True) + self.eps)
    return self.scale[...].astype(self.dtype) * y.astype(self.dtype)


class Embed(nnx.Module):
  """Token embedding table [v, d]; `attend` gives tied LM-head logits."""

  def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.embedding = nnx.Param(_normal(0.02)(rngs.params(), (num, dim), param_dtype), axes=("vocab", "embed"))
    self.dtype = dtype

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    return _token_matmul(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


def _quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": _quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r} is not supported; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def remat_policy(name: str):
  """Maps a config name to a `jax.checkpoint` policy (None means no remat)."""
  return {
      "none": None,
      "full": jax.checkpoint_policies.nothing_saveable,
      "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
      "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }[name]


class LayerStack(nnx.Module):
  """N identical layers, either a Python list (unrolled) or stacked on a leading `layers` axis (scanned).

  `apply(x, fn, n=k)` runs `fn(layer, carry, xs_i) -> (carry, y_i)` over the first k layers and returns
  (carry, ys). Stacked layers run under `jax.lax.scan`: `xs` is a pytree of arrays with a leading layer axis
  and ys come back stacked the same way. Unrolled layers take `xs` as a sequence with one entry per layer
  and return ys as a tuple (so per-layer buffers such as a KV cache are never sliced out of, or stacked
  into, one big array: each stays where it is). `policy` (a `jax.checkpoint` policy or None)
  rematerialises each layer.
  """

  def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], n: int, *, scan: bool, rngs: nnx.Rngs):
    self.scan = scan
    self.n = n
    if scan:
      @nnx.split_rngs(splits=n)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def make(r):
        return make_layer(r)
      self.layers = make(rngs)
    else:
      self.layers = nnx.List([make_layer(rngs) for _ in range(n)])

  def apply(self, carry, fn, *, xs=None, n: int | None = None, policy=None):
    n = self.n if n is None else n
    if self.scan:
      graphdef, state = nnx.split(self.layers)
      if n != self.n:
        state = jax.tree.map(lambda a: a[:n], state)

      def body(c, inputs):
        st, x_i = inputs
        return fn(nnx.merge(graphdef, st), c, x_i)

      if policy is not None:
        body = jax.checkpoint(body, policy=policy)
      return jax.lax.scan(body, carry, (state, xs))
    ys = []
    step = fn if policy is None else nnx.remat(fn, policy=policy)
    for i in range(n):
      carry, y = step(self.layers[i], carry, None if xs is None else xs[i])
      ys.append(y)
    return carry, (None if all(y is None for y in ys) else tuple(ys))
