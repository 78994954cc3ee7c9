"""The one test hook that kills a run like a preempted machine (SIGKILL: no cleanup, no finally blocks).

Every resumable job has a config field `debug_kill_at` ("" = never) naming a point it passes, and calls
`kill_if(config.debug_kill_at, point)` there. Points: the train loop "step_<n>" (after step n), data
generation "chunk_<n>" (after the n-th journal append), iterative DPO "round_<k>/sample" and "round_<k>/train".
"""

from __future__ import annotations

import os
import signal


def kill_if(kill_at: str, point: str) -> None:
  if kill_at and kill_at == point:
    os.kill(os.getpid(), signal.SIGKILL)
