"""One preference pair as one shared-prompt example: `[prompt | chosen | rejected]` (`batches.SharedDpoBatch`).

    ids, mask, positions, branches = share_prompt(chosen, rejected, max_len=T, min_target_tokens=4)

chosen, rejected: (ids [n], loss_mask [n]) of the two sides as the unshared path tokenizes them (the same prompt,
then a reply). The shared prefix is the prompt up to, not including, its last token: that token's hidden state
predicts each reply's first token, so it heads both branches (worked row in `batches`). Positions continue from
the prefix on both branches, so each reply is scored exactly as in its own row [prompt | reply].

Fitting T: a pair that does not fit loses reply tokens from the end, from the longer reply first, as long as each
keeps `min_target_tokens` targets; otherwise it is over-long (`TooLong`). The unshared path gives each side T
tokens of its own row, so a pair longer than T here is the only case where the two layouts score different
tokens.
"""

from __future__ import annotations

import numpy as np

CHOSEN, REJECTED = 1, 2  # branch ids (0 = the shared prompt), as in batches.SharedDpoBatch.branches


class TooLong(ValueError):
  """The pair cannot fit max_len while keeping min_target_tokens targets of each reply."""


def shared_length(chosen_ids: np.ndarray, rejected_ids: np.ndarray, chosen_mask: np.ndarray,
                  rejected_mask: np.ndarray) -> int:
  """Tokens of the shared prefix: the common prompt before the first target of either side, less its last token."""
  n = min(len(chosen_ids), len(rejected_ids))
  differ = np.flatnonzero(chosen_ids[:n] != rejected_ids[:n])
  common = int(differ[0]) if len(differ) else n
  first = lambda m: int(np.argmax(m)) if m.any() else len(m)
  return max(0, min(common, first(chosen_mask), first(rejected_mask)) - 1)


def _fit(c: int, r: int, budget: int) -> tuple[int, int]:
  """Branch lengths (c', r') <= (c, r) with c' + r' <= budget, cutting the longer one first."""
  if c + r <= budget:
    return c, r
  short = min(c, r)
  if short <= budget // 2:
    return (c, budget - c) if c == short else (budget - r, r)
  return budget - budget // 2, budget // 2


def share_prompt(chosen: tuple[np.ndarray, np.ndarray], rejected: tuple[np.ndarray, np.ndarray], *, max_len: int,
                 min_target_tokens: int = 1, image_token_id: int | None = None):
  """-> (ids, loss_mask, positions, branches), each [L] int32 with L <= max_len (see the module doc).

  Raises `TooLong` when the pair cannot fit, and ValueError when an image token would sit on a branch (images
  belong to the prompt, which is spliced once).
  """
  (ci, cm), (ri, rm) = chosen, rejected
  s = shared_length(ci, ri, cm, rm)
  if image_token_id is not None and ((ci[s:] == image_token_id).any() or (ri[s:] == image_token_id).any()):
    raise ValueError("an image token after the shared prompt; shared-prompt DPO needs the images in the prompt")
  c, r = _fit(len(ci) - s, len(ri) - s, max_len - s)
  kept = lambda m, n: int(m[s:s + n].sum())  # targets a branch keeps
  if kept(cm, c) < min(min_target_tokens, int(cm.sum())) or kept(rm, r) < min(min_target_tokens, int(rm.sum())):
    raise TooLong(f"prompt {s + 1} tokens + replies {len(ci) - s - 1} and {len(ri) - s - 1} do not fit max_len="
                  f"{max_len} keeping {min_target_tokens} reply tokens each")
  ids = np.concatenate([ci[:s], ci[s:s + c], ri[s:s + r]]).astype(np.int32)
  mask = np.concatenate([cm[:s], cm[s:s + c], rm[s:s + r]]).astype(np.int32)
  positions = np.concatenate([np.arange(s), s + np.arange(c), s + np.arange(r)]).astype(np.int32)
  branches = np.concatenate([np.zeros(s), np.full(c, CHOSEN), np.full(r, REJECTED)]).astype(np.int32)
  return ids, mask, positions, branches
