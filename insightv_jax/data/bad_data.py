"""The bad-data policy: a record the loader cannot use is skipped with a log line naming it (file[index] and id),
or with `strict=True` raises `BadRecord`; data that is mostly bad stops the run with `BadData`.

`Health` counts the records a reader sees and raises `BadData` when none of the first `max_bad_prefix` records read
is usable, or more than `max_skip_fraction` of the records read were skipped once at least `max_bad_prefix` were
read. The error is one line naming the file, the first bad record and its reason, and what to change when that
record looks like another known format. `Stop` is shared by one pipeline's Encoder and Batcher: set when the
Batcher raises, so that encoder threads still prefetching stop working and logging after the error.
"""

from __future__ import annotations

import dataclasses
import re

from insightv_jax.data import records
from insightv_jax.data.images import ImageDecodeError
from insightv_jax.data.loader_config import LoaderConfig
from insightv_jax.utils.inputs import InputError


class BadRecord(Exception):
  """A record the loader cannot use; str() names the record and the reason."""


class BadData(BadRecord, InputError):
  """The data as a whole is unusable (too many bad records); str() is one line naming the file, the first bad
  record and its reason, and a format hint when there is one."""

  def add_note(self, note):
    """Dropped: Grain notes that it hid its frames from the traceback, which would print after the message; the
    message must stay the last line a user sees."""


@dataclasses.dataclass
class Skipped:
  """A record the Encoder could not use. hint: what to change when it looks like another known format."""

  where: str
  reason: str
  hint: str | None = None


@dataclasses.dataclass
class Stop:
  """Shared by one pipeline's Encoder and Batcher (in each process that runs them): set when the Batcher raises
  `BadData`, so that encoder threads still prefetching stop working and logging after the error."""

  stopped: bool = False


# what the Encoder skips (other exceptions raise)
RECORD_ERRORS = (records.RecordError, ImageDecodeError, BadRecord, OSError, ValueError)


class Health:
  """Counts the records a Batcher reads; raises `BadData` when the data is mostly bad (see the module doc)."""

  def __init__(self, cfg: LoaderConfig, stop: Stop | None = None):
    self.cfg, self.stop = cfg, stop or Stop()
    self.read, self.skipped = 0, 0
    self.first_bad: Skipped | None = None

  def count(self, ex):
    self.read += 1
    if not isinstance(ex, Skipped):
      return
    self.skipped += 1
    self.first_bad = self.first_bad or ex
    n = self.cfg.max_bad_prefix
    if n and self.skipped == self.read >= n:
      self._fail(f"none of the first {self.read} records read is usable (data.max_bad_prefix={n})")
    if n and self.read >= n and self.skipped > self.cfg.max_skip_fraction * self.read:
      self._fail(f"{self.skipped} of the first {self.read} records read were skipped, more than "
                 f"data.max_skip_fraction={self.cfg.max_skip_fraction}")

  def at_end(self):
    """The data ended (the probe read all of a finite pipeline's records): none usable is an error."""
    if self.read and self.skipped == self.read and self.cfg.max_bad_prefix:
      self._fail(f"none of the {self.read} records read is usable")

  def _fail(self, what: str):
    bad = self.first_bad
    file = re.sub(r"(\[\d+\]|:\d+)$", "", bad.where)
    msg = f"{file}: {what}. First bad record: {bad.reason}" + (f". Hint: {bad.hint}" if bad.hint else "")
    self.stop.stopped = True
    raise BadData(" ".join(msg.split()))
