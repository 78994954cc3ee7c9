"""Run metrics: `metrics.jsonl` (one JSON object per logged step), TensorBoard events, progress lines.

On resume, lines for steps after the restored checkpoint are dropped from metrics.jsonl (they were
computed by the killed run and will be computed again), so the file always reads as one clean run.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging

from insightv_jax.utils.files import read_jsonl_log


class MetricsWriter:
  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    read_jsonl_log(self.path, keep=lambda row: row.get("step", 0) <= resume_step)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    except ImportError:  # pragma: no cover - tensorboardX is a declared dependency
      logging.warning("tensorboardX is not installed: no TensorBoard events")

  def write(self, metrics: dict):
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(metrics, sort_keys=True) + "\n")
    if self._tb is not None:
      for k, v in metrics.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, metrics["step"])

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Steps/s, tokens/s and ETA since the (re)start."""

  def __init__(self, total: int, start: int = 0):
    self.total, self.start = total, start
    self.t0 = time.time()
    self.step, self.tokens = start, 0

  def update(self, step: int, tokens: int):
    self.step = step
    self.tokens += tokens

  def rates(self) -> dict:
    dt = max(time.time() - self.t0, 1e-9)
    done = self.step - self.start
    sps = done / dt
    return {"steps_per_sec": sps, "tokens_per_sec": self.tokens / dt,
            "eta_sec": (self.total - self.step) / sps if sps > 0 else float("nan")}

  def line(self, m: dict) -> str:
    eta = m.get("eta_sec", float("nan"))
    eta_s = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
    extra = " ".join(f"{k}={m[k]:.4g}" for k in sorted(m) if k.startswith("rewards/"))
    return (f"step {m['step']}/{self.total} loss={m['loss']:.4f} grad_norm={m.get('grad_norm', 0):.3g} "
            f"lr={m.get('learning_rate', 0):.3g} {m['steps_per_sec']:.2f} steps/s "
            f"{m['tokens_per_sec']:.0f} tok/s" + (f" MFU {m['mfu']:.1%}" if "mfu" in m else "")
            + f" ETA {eta_s} {extra}").strip()
