"""What GRPO rollouts are asked: questions (reasoning agent) or (question, chain) pairs (summary agent), and the
resumable stream that hands them out.

    items = load_items(config)              # [Item]: the question (with its gold answer) and, summary agent, a chain
    stream = QuestionStream(items, seed=0, sample_seed=0)
    batch = stream.take(4)                  # the next 4 items (a fresh shuffle per epoch)
    seeds = stream.seeds(4, G)              # the sampling seeds of those items' replies: G per item
    stream.get_state() / set_state(b)       # JSON bytes: position and next seed (the Orbax "iter" item)

Questions: `question` records (insightv_jax/data/records.py; JSONL or ArrayRecord files in --config.data.paths,
images relative to --config.data.image_root), LLaVA conversation JSON (--config.data.format=llava, read as the
loader reads it, `data/llava_format.py`: the question is the first human turn without `<image>`, the gold answer
the record's `answer` field, else the last gpt turn's final answer: the text inside <output>...</output> when
present, else the whole turn), or 'synthetic:N': N questions of the synthetic world written into the run folder
(the tiny variant's default); a record without an answer stops the run naming its file, record and id.

Processes: every process holds the same stream and takes the same items (pipelines/grpo.py samples the whole
rollout on every process, one SPMD sampler over the global mesh); its state, two integers, is the same in every
process's checkpoint file, so a run resumes exactly, on the same or on another process count.
Summary agent: `grpo.chain_source` names files of `summary_sft` records (question, the chain shown, the right
answer: data_gen's summary data, sound and flawed chains mixed) or of `path` records (the reasoning agent's sampled
chains, data_gen's reasoning paths), the latter joined by question_id with the questions of --config.data.paths.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from insightv_jax.data import llava_format, prompts, records, sources
from insightv_jax.data.images import decode
from insightv_jax.data.templates import IMAGE_PLACEHOLDER
from insightv_jax.scoring.extract import answer_span
from insightv_jax.utils.inputs import InputError


@dataclasses.dataclass(frozen=True)
class Item:
  """question: the `records.Question` the rewards judge against; chain: what the summary agent reads (None for
  the reasoning agent)."""

  question: records.Question
  chain: str | None = None


def read_records(paths: str) -> list[records.Record]:
  """Our records from comma-separated JSONL / ArrayRecord files, each validated (errors name file and line)."""
  out = []
  for path in [p for p in paths.split(",") if p]:
    if not os.path.exists(path):
      raise InputError(f"GRPO questions: no such file {path!r}")
    if path.endswith((".jsonl", ".json")):
      out += list(records.read_jsonl(path))
    else:
      src = sources.ArrayRecordSource(path)
      out += [records.loads(src[i][1], src[i][0]) for i in range(len(src))]
  return out


def llava_question(raw: bytes | str, where: str) -> records.Question:
  """One LLaVA record (a conversation, or a preference pair with 'answer') -> a question with its gold answer:
  the record's 'answer' field, else the last gpt turn's final answer (`scoring.extract.answer_span`: inside
  <output>...</output> when present, else the whole turn). No usable answer: an InputError naming where and id."""
  rec = llava_format.loads(raw, where)
  named = f"{where} (id={rec.id!r})"
  d = json.loads(raw)
  given = d.get("answer") if isinstance(d, dict) else None
  if isinstance(rec, llava_format.Conversation):
    question = next((m["content"] for m in rec.messages if m["role"] == "user"), None)
    replies = [m["content"] for m in rec.messages if m["role"] == "assistant"]
    answer = given if isinstance(given, str) and given.strip() else answer_span(replies[-1]) if replies else ""
  else:
    question, answer = rec.prompt, rec.answer or ""
  question = (question or "").replace(IMAGE_PLACEHOLDER, "").strip()
  if not question:
    raise InputError(f"--config.data.paths: {named}: no human turn with a question")
  if not answer.strip():
    raise InputError(f"--config.data.paths: {named}: no usable answer for the rewards to judge (no 'answer' field, "
                     "and no gpt turn with a final answer); GRPO questions need their gold answer")
  q = records.Question(id=str(rec.id) if rec.id is not None else where, images=rec.images, question=question,
                       answer=answer.strip(), source="llava")
  q.validate(named)
  return q


def _questions(paths: str, flag: str, data_format: str = "auto") -> list[records.Question]:
  if data_format == "llava":
    missing = [p for p in paths.split(",") if p and not os.path.exists(p)]
    if missing:
      raise InputError(f"GRPO questions: no such file {missing[0]!r}")
    recs = [llava_question(raw, where) for where, raw in sources.JsonSource([p for p in paths.split(",") if p])]
    if not recs:
      raise InputError(f"{flag}={paths!r} holds no questions")
    return recs
  recs = read_records(paths)
  bad = next((r for r in recs if not isinstance(r, records.Question)), None)
  if bad is not None:
    raise InputError(f"{flag}: record {bad.id!r} is a {bad.KIND!r} record; GRPO questions are 'question' records "
                     "(id, images, question, answer)")
  if not recs:
    raise InputError(f"{flag}={paths!r} holds no questions")
  return recs


def synthetic_questions(spec: str, root: str, seed: int = 0) -> str:
  """'synthetic:N' -> the path of N question records of the synthetic world (data_gen/synthetic), written once
  under root (images in root/images, relative to root: the run's image root)."""
  n = spec.split(":", 1)[1]
  if not n.isdigit() or int(n) < 1:
    raise InputError(f"--config.data.paths={spec}: expected synthetic:N with N a positive count of questions")
  path = os.path.join(root, "train.jsonl")
  if not os.path.exists(path):
    from data_gen.synthetic.world import World, WorldConfig
    World(WorldConfig(image_size=56), seed=seed).write(root, "train", int(n))
  return path


def load_items(config, paths: str | None = None) -> list[Item]:
  """The run's items from `paths` (default config.data.paths) and, for the summary agent,
  config.grpo.chain_source."""
  g = config.grpo
  paths = config.data.paths if paths is None else paths
  fmt = config.data.format
  if fmt not in ("auto", "llava"):
    raise InputError(f"--config.data.format={fmt!r}: GRPO reads question records (auto) or LLaVA JSON (llava)")
  if g.agent == "reasoning":
    return [Item(q) for q in _questions(paths, "--config.data.paths", fmt)]
  if not g.chain_source:
    raise InputError("--config.grpo.agent=summary needs --config.grpo.chain_source: files of summary_sft records "
                     "or of the reasoning agent's sampled chains (path records, joined with --config.data.paths)")
  items, by_id = [], None
  preset = prompts.get_preset(config.data.prompts or prompts.DEFAULT_PRESET)
  for r in read_records(g.chain_source):
    if isinstance(r, records.SummarySFT):
      items.append(Item(records.Question(id=r.id, images=r.images, question=r.question, answer=r.answer),
                        r.reasoning))
    elif isinstance(r, records.ReasoningPath):
      if by_id is None:
        by_id = {q.id: q for q in _questions(paths, "--config.data.paths", fmt)} if paths else {}
      if r.question_id not in by_id:
        raise InputError(f"--config.grpo.chain_source: path {r.id!r} answers question {r.question_id!r}, which is "
                         "not in --config.data.paths")
      items.append(Item(by_id[r.question_id], preset.format_chain([(s.title, s.content) for s in r.steps])))
    else:
      raise InputError(f"--config.grpo.chain_source: record {r.id!r} is a {r.KIND!r} record; expected summary_sft "
                       "or path records")
  if not items:
    raise InputError(f"--config.grpo.chain_source={g.chain_source!r} holds no chains")
  return items


def load_image(question: records.Question, image_root: str):
  """The question's first image as a PIL image, or None (a text-only question)."""
  if not question.images:
    return None
  return decode(question.images[0].read(image_root or None), f"question {question.id!r} image")


class QuestionStream:
  """Items in a fresh seeded shuffle per epoch, and a counter of sampling seeds; its state is two integers."""

  def __init__(self, items: list[Item], *, seed: int = 0, sample_seed: int = 0):
    self.items, self.seed = items, seed
    self.position, self.next_seed = 0, int(sample_seed)
    self._perm = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._perm:
      self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.items))}
    return self._perm[epoch]

  def take(self, n: int) -> list[Item]:
    out = []
    for _ in range(n):
      epoch, i = divmod(self.position, len(self.items))
      out.append(self.items[int(self._order(epoch)[i])])
      self.position += 1
    return out

  def seeds(self, n: int, per_item: int = 1) -> list[int]:
    """The next sampling seeds of n items, per_item each (replies), item-major."""
    out = [(self.next_seed + i) % 2**32 for i in range(n * per_item)]
    self.next_seed = (self.next_seed + n * per_item) % 2**32
    return out

  # the Orbax "iter" item (grain.checkpoint.CheckpointHandler: bytes from get_state, set_state on restore)
  def get_state(self) -> bytes:
    return json.dumps({"position": self.position, "next_seed": self.next_seed}).encode()

  def set_state(self, state: bytes):
    d = json.loads(state)
    self.position, self.next_seed = int(d["position"]), int(d["next_seed"])

  def start_prefetch(self):
    pass

  def snapshot(self) -> _Frozen:
    """The state now, for an async save that may read it after the stream has moved on."""
    return _Frozen(self.get_state())


@dataclasses.dataclass(frozen=True)
class _Frozen:
  state: bytes

  def get_state(self) -> bytes:
    return self.state
