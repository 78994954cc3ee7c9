"""Statistics of the multi-seed demo: spread over seeds, and the test-set sampling interval of pooled answers.

    cell = summarise({0: [True, False, ...], 1: [...], 2: [...]})   # one system on one split, per seed
    cell.mean, cell.std, cell.lo, cell.hi        # accuracy over seeds: mean, sample std, min, max
    cell.k, cell.n, cell.wilson                  # pooled answers: correct, total, Wilson 95% interval
    compare(a, b)                                # "holds" (b's interval above a's), "overlaps" or "fails"

Two sources of variation are reported apart: the seeds (model init and data order; `std`, `lo`-`hi`) and the
finite test set (the Wilson interval of all seeds' answers pooled). Pooled answers of several seeds on the
same questions are not independent, so the interval is the test-set sampling interval of the pooled accuracy,
not a confidence interval over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of k successes in n trials (0 <= lo <= k/n <= hi <= 1); (0, 1) when n == 0."""
  if n == 0:
    return 0.0, 1.0
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One system on one split over seeds: per-seed accuracies and the pooled answers."""

  per_seed: tuple[float, ...]
  k: int
  n: int

  @property
  def seeds(self) -> int:
    return len(self.per_seed)

  @property
  def mean(self) -> float:
    return sum(self.per_seed) / len(self.per_seed) if self.per_seed else float("nan")

  @property
  def std(self) -> float:
    """Sample standard deviation over seeds (ddof 1); 0 for a single seed."""
    if len(self.per_seed) < 2:
      return 0.0
    m = self.mean
    return math.sqrt(sum((x - m) ** 2 for x in self.per_seed) / (len(self.per_seed) - 1))

  @property
  def lo(self) -> float:
    return min(self.per_seed) if self.per_seed else float("nan")

  @property
  def hi(self) -> float:
    return max(self.per_seed) if self.per_seed else float("nan")

  @property
  def wilson(self) -> tuple[float, float]:
    return wilson(self.k, self.n)

  def to_json(self) -> dict:
    return {"per_seed": list(self.per_seed), "mean": self.mean, "std": self.std, "min": self.lo, "max": self.hi,
            "k": self.k, "n": self.n, "wilson95": list(self.wilson)}


def summarise(per_seed: Mapping[int, Sequence[bool]]) -> Cell:
  """{seed: [answer correct?, ...]} -> Cell (seeds with no answers are left out)."""
  accs, k, n = [], 0, 0
  for seed in sorted(per_seed):
    answers = list(per_seed[seed])
    if answers:
      accs.append(sum(map(bool, answers)) / len(answers))
      k, n = k + sum(map(bool, answers)), n + len(answers)
  return Cell(tuple(accs), k, n)


def compare(a: Cell, b: Cell) -> str:
  """Is b better than a? "holds": b's Wilson interval lies above a's; "overlaps": b's mean is higher but the
  intervals overlap; "fails": b's mean is not higher."""
  if not b.mean > a.mean:
    return "fails"
  return "holds" if b.wilson[0] > a.wilson[1] else "overlaps"


def not_worse(a: Cell, b: Cell) -> str:
  """Is b not worse than a? "holds": b's mean is at least a's; "overlaps": lower, but the intervals overlap (not
  measurably worse); "fails": b's interval lies below a's."""
  if b.mean >= a.mean:
    return "holds"
  return "fails" if b.wilson[1] < a.wilson[0] else "overlaps"


def pct(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{100 * x:.1f}"
