"""GRPO training rows: each question's G sampled replies in one row, `[prompt | reply_1 | ... | reply_G]`.

    packed = pack_groups(groups, rows=B, max_len=T, groups_per_row=K, images_per_row=I, max_reply_len=L,
                         num_tiles=n, tile=s, pad_id=0)
    batch = packed.batch.replace(advantages=packed.to_slots(adv))   # adv [n_replies], group-major
    logps = grpo_steps.group_logprobs(graphdef, params, batch)     # [B * R, L]; packed.from_slots(...) -> [n, L]

A group is (prompt ids [P], G reply ids [n_k], images): the prompt as the sampler saw it (image placeholders
already expanded), each reply as sampled (its stop token included). The layout is shared-prompt DPO's
(`shared_pairs`, `batches.SharedDpoBatch`) with G branches: the prompt up to its last token once (branch 0), then
per reply k a branch k = [prompt's last token | reply_k], positions continuing from the prompt on every branch, so
each reply token is predicted exactly as in its own row `[prompt | reply_k]`; the group's images are spliced
once. Worked, prompt p0 p1 p2, replies a0 a1 and b0 b1 b2 (G = 2, K = 1, T = 11):

    input_ids    [[p0 p1 p2 a0 a1 p2 b0 b1 b2 pad pad]]
    branches     [[ 0  0  1  1  1  2  2  2  2   0   0]]    0 = shared prompt (and padding); k = reply k
    segment_ids  [[ 1  1  1  1  1  1  1  1  1   0   0]]    group number in the row; 0 = padding
    positions    [[ 0  1  2  3  4  2  3  4  5   0   0]]
    loss_mask    [[ 0  0  0  1  1  0  1  1  1   0   0]]
    reply_positions  [[[2 3 0], [5 6 7]]]   (L = 3) the position whose hidden state predicts reply token t
    reply_mask       [[[1 1 0], [1 1 1]]]

The plain layout (`plain=True`, for comparison and benchmarks) is one row per reply, `[prompt | reply_k]`, the
prompt and its images repeated G times (branches None, R = 1). Reply slots: row b holds R = K * G reply slots
(plain: 1), reply r of row b is flat slot b * R + r; `Packed.slot` maps each input reply to its slot.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import numpy as np
from flax import struct

from insightv_jax.data.batches import Geometry, TokenRows, _image_specs, _spec
from insightv_jax.data.images import stack_batch


class Group(NamedTuple):
  """One question's rollouts: prompt ids [P] (P >= 1), replies: G arrays of ids [n_k], images: the prompt's
  images in placeholder order, each `images.preprocess` output (tiles [t, 3, s, s], (H, W))."""

  prompt: np.ndarray
  replies: Sequence[np.ndarray]
  images: Sequence[tuple[np.ndarray, tuple[int, int]]] = ()


class DoesNotFit(ValueError):
  """A group, or the whole set of groups, does not fit the rows given (the message names the sizes)."""


@struct.dataclass
class GroupBatch:
  """GRPO rows (see the module doc): B rows of T tokens holding R reply slots each.

  tokens: TokenRows [B, T] (segment_ids = group number in the row, loss_mask on reply tokens); branches [B, T]
  int32 (None in the plain layout); pixel_values [I, n, 3, tile, tile] float32, image_sizes [I, 2] int32;
  reply_positions [B, R, L] int32: the row position whose hidden state predicts reply token t; reply_mask
  [B, R, L] int32: 1 = a reply token (an empty slot is all 0); advantages [B, R] float32; old_logps, ref_logps
  [B, R, L] float32 or None (the sampling policy's and the reference's per-token log-probs).
  replies_per_row: R (static).
  """

  tokens: TokenRows
  reply_positions: jax.Array
  reply_mask: jax.Array
  advantages: jax.Array
  branches: jax.Array | None = None
  pixel_values: jax.Array | None = None
  image_sizes: jax.Array | None = None
  old_logps: jax.Array | None = None
  ref_logps: jax.Array | None = None
  replies_per_row: int = struct.field(pytree_node=False, default=1)

  @classmethod
  def abstract(cls, g: Geometry, replies_per_row: int, max_reply_len: int, mesh=None, *, branched: bool = True,
               old_logps: bool = False, ref_logps: bool = False) -> GroupBatch:
    """The batch as `jax.ShapeDtypeStruct`s (rows split over the batch mesh axes when a mesh is given)."""
    r, L = replies_per_row, max_reply_len
    per_reply = lambda dtype: _spec((g.rows, r, L), dtype, mesh)
    return cls(tokens=TokenRows.abstract(g, mesh), reply_positions=per_reply(np.int32),
               reply_mask=per_reply(np.int32), advantages=_spec((g.rows, r), np.float32, mesh),
               branches=_spec((g.rows, g.max_len), np.int32, mesh) if branched else None, **_image_specs(g, mesh),
               old_logps=per_reply(np.float32) if old_logps else None,
               ref_logps=per_reply(np.float32) if ref_logps else None, replies_per_row=r)


@dataclasses.dataclass(frozen=True)
class Packed:
  """pack_groups' result: the batch, and slot [n_replies] int: the flat reply slot (row * R + r) of each input
  reply, in input order (group 0's replies, then group 1's ...)."""

  batch: GroupBatch
  slot: np.ndarray

  def to_slots(self, values) -> np.ndarray:
    """Per input reply values [n_replies, ...] -> [B, R, ...] (zeros in empty slots)."""
    values = np.asarray(values)
    b, r = self.batch.advantages.shape
    out = np.zeros((b * r,) + values.shape[1:], values.dtype)
    out[self.slot] = values
    return out.reshape((b, r) + values.shape[1:])

  def from_slots(self, x) -> np.ndarray:
    """[B * R, ...] or [B, R, ...] per slot -> [n_replies, ...] per input reply."""
    x = np.asarray(x)
    b, r = self.batch.advantages.shape
    if x.shape[:2] == (b, r):
      x = x.reshape((b * r,) + x.shape[2:])
    return x[self.slot]


def group_example(prompt: np.ndarray, replies: Sequence[np.ndarray], *, image_token_id: int | None = None):
  """One group as one example -> (ids, loss_mask, positions, branches) [n] int32 and heads [G] (the index of
  each branch's head, whose hidden state predicts the reply's first token). See the module doc."""
  prompt = np.asarray(prompt, np.int32)
  if len(prompt) < 1:
    raise ValueError("a group's prompt is empty")
  last = prompt[-1:]
  if image_token_id is not None and last[0] == image_token_id:
    raise ValueError("the prompt ends with an image token; the images belong inside the shared prompt")
  s = len(prompt) - 1
  ids, mask, pos, br, heads = [prompt[:s]], [np.zeros(s, np.int32)], [np.arange(s)], [np.zeros(s, np.int32)], []
  at = s
  for k, reply in enumerate(replies, 1):
    reply = np.asarray(reply, np.int32)
    if image_token_id is not None and (reply == image_token_id).any():
      raise ValueError(f"reply {k} holds an image token; images belong in the prompt")
    n = len(reply)
    heads.append(at)
    ids += [last, reply]
    mask += [np.zeros(1, np.int32), np.ones(n, np.int32)]
    pos.append(s + np.arange(n + 1))
    br.append(np.full(n + 1, k, np.int32))
    at += n + 1
  cat = lambda xs: np.concatenate(xs).astype(np.int32)
  return cat(ids), cat(mask), cat(pos), cat(br), np.asarray(heads, np.int32)


def plain_example(prompt: np.ndarray, reply: np.ndarray):
  """`[prompt | reply]` -> (ids, loss_mask, positions, branches (all 0)) [n] int32 and heads [1] (= P - 1)."""
  prompt, reply = np.asarray(prompt, np.int32), np.asarray(reply, np.int32)
  n, p = len(prompt) + len(reply), len(prompt)
  ids = np.concatenate([prompt, reply]).astype(np.int32)
  mask = (np.arange(n) >= p).astype(np.int32)
  return ids, mask, np.arange(n, dtype=np.int32), np.zeros(n, np.int32), np.asarray([p - 1], np.int32)


def pack_groups(groups: Sequence[Group], *, rows: int, max_len: int, max_reply_len: int, groups_per_row: int = 1,
                images_per_row: int = 1, num_tiles: int, tile: int, pad_id: int = 0, plain: bool = False,
                image_token_id: int | None = None) -> Packed:
  """Groups (all with the same G) -> `Packed` GroupBatch of `rows` rows, first-fit in input order.

  Group rows: up to groups_per_row groups per row (R = groups_per_row * G). plain=True: one `[prompt | reply]`
  row per reply (R = 1), the prompt and images repeated. Raises `DoesNotFit` naming the sizes when a reply is
  longer than max_reply_len, an example longer than max_len, or the examples need more than `rows` rows.
  """
  if not groups:
    raise ValueError("pack_groups: no groups")
  g = len(groups[0].replies)
  if any(len(gr.replies) != g for gr in groups):
    raise ValueError(f"every group needs the same number of replies; got {sorted({len(x.replies) for x in groups})}")
  examples = []  # (ids, mask, pos, br, heads, reply lengths, images)
  for i, gr in enumerate(groups):
    lengths = [len(r) for r in gr.replies]
    if max(lengths) > max_reply_len:
      raise DoesNotFit(f"group {i}: a reply of {max(lengths)} tokens is longer than max_reply_len={max_reply_len}")
    if plain:
      examples += [(*plain_example(gr.prompt, r), [n], list(gr.images)) for r, n in zip(gr.replies, lengths)]
    else:
      examples.append((*group_example(gr.prompt, gr.replies, image_token_id=image_token_id), lengths,
                       list(gr.images)))
  per_row = 1 if plain else groups_per_row
  r_slots = g * groups_per_row if not plain else 1
  placed: list[list[int]] = [[] for _ in range(rows)]
  used, imgs = [0] * rows, [0] * rows
  for e, ex in enumerate(examples):
    n, n_img = len(ex[0]), len(ex[6])
    if n > max_len or n_img > images_per_row:
      raise DoesNotFit(f"example {e}: {n} tokens and {n_img} images do not fit max_len={max_len}, "
                       f"images_per_row={images_per_row}")
    row = next((r for r in range(rows) if used[r] + n <= max_len and imgs[r] + n_img <= images_per_row
                and len(placed[r]) < per_row), None)
    if row is None:
      raise DoesNotFit(f"{len(examples)} examples ({sum(len(x[0]) for x in examples)} tokens) do not fit "
                       f"rows={rows} x max_len={max_len} with {per_row} per row")
    placed[row].append(e)
    used[row] += n
    imgs[row] += n_img
  B, T, L = rows, max_len, max_reply_len
  ids = np.full((B, T), pad_id, np.int32)
  mask, seg, pos, br = (np.zeros((B, T), np.int32) for _ in range(4))
  rpos, rmask = np.zeros((B, r_slots, L), np.int32), np.zeros((B, r_slots, L), np.int32)
  slot = np.zeros(sum(len(gr.replies) for gr in groups), np.int64)
  image_slots = []
  reply_of_example = np.cumsum([0] + [len(ex[5]) for ex in examples])  # first input reply of each example
  for r, row in enumerate(placed):
    at, k = 0, 0  # token offset, next reply slot
    for s_id, e in enumerate(row, 1):
      x, m, p, b, heads, lengths, images = examples[e]
      n = len(x)
      ids[r, at:at + n], mask[r, at:at + n], seg[r, at:at + n], pos[r, at:at + n] = x, m, s_id, p
      br[r, at:at + n] = b
      for j, (head, length) in enumerate(zip(heads, lengths)):
        rpos[r, k, :length] = at + head + np.arange(length)
        rmask[r, k, :length] = 1
        slot[reply_of_example[e] + j] = r * r_slots + k
        k += 1
      at += n
      image_slots += images
    image_slots += [None] * (images_per_row - sum(len(examples[e][6]) for e in row))
  pixel_values, image_sizes = stack_batch(image_slots, num_tiles, tile)
  tokens = TokenRows(input_ids=ids, loss_mask=mask, segment_ids=seg, positions=pos)
  batch = GroupBatch(tokens=tokens, reply_positions=rpos, reply_mask=rmask,
                     advantages=np.zeros((B, r_slots), np.float32), branches=None if plain else br,
                     pixel_values=pixel_values, image_sizes=image_sizes, replies_per_row=r_slots)
  return Packed(batch=batch, slot=slot)
