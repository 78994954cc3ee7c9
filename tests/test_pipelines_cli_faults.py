"""The fault table: insightv-train, -convert, -eval and -datagen on inputs that go wrong in real life.

Each case runs the real command line in its own process (a few at a time) on one bad input: missing, empty, the
wrong format, truncated, corrupt, the wrong type, unreachable, a name no registry holds, a tokenizer that lacks the
tokens its chat template writes. Every case must exit with status 2 within 30 s with the culprit (flag, file,
record, tensor or URL) named in the LAST line of stderr, which starts with `error:`; a case whose bad input the run
goes on without (a benchmark question whose image is missing) exits 0 and names it in a warning and its report. A
case that runs over state an earlier run left (a checkpoint, a journal, an export) checks that the state is
unchanged and that a rerun with the input fixed resumes from it. Grow the table whenever a new input appears. `-k`
runs only the cases it selects (the material is built once).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable

import pytest
from cli_faults_material import Teacher, build_material, closed_port_url, status_handler
from cli_faults_runs import (
  BASE,
  GRPO,
  LOCAL,
  OPENAI,
  Result,
  convert_first,
  convert_intact,
  datagen_resumes,
  datagen_retries_failed,
  eval_first,
  eval_reports_failed_question,
  eval_resumes,
  run_cli,
  train_first,
  train_resumes,
)
from fake_server import serve

LIMIT_S = 30
WORKERS = 3


@dataclasses.dataclass
class Case:
  cli: str  # train | convert | eval | datagen
  name: str  # the input and what is wrong with it
  flags: dict  # changes to BASE[cli] (None removes a flag)
  words: tuple[str, ...]  # what the last line of stderr must name (status 0: what a warning on stderr must name)
  before: Callable | None = None  # before(m, w): state an earlier run leaves
  after: Callable | None = None  # after(m, w, state): that state is intact, and a fixed rerun resumes from it
  status: int = 2  # 2: the input stops the run; 0: the run goes on without what is bad, and says so

  @property
  def id(self):
    return f"{self.cli}-{self.name}"


# ---------------------------------------------------------------------------------------------- the table

CASES = [
    # insightv-train
    Case("train", "tokenizer-empty", {"config.tokenizer": ""}, ("--config.tokenizer", "empty")),
    Case("train", "tokenizer-missing", {"config.tokenizer": "{w}/nope"}, ("--config.tokenizer", "nope")),
    Case("train", "tokenizer-wrong-type", {"config.tokenizer": "{a_file}"}, ("--config.tokenizer", "not a folder")),
    Case("train", "tokenizer-corrupt", {"config.tokenizer": "{tok_bad}"}, ("tok_bad", "cannot be loaded")),
    Case("train", "data-empty-flag", {"config.data.paths": ""}, ("--config.data.paths", "empty")),
    Case("train", "data-missing", {"config.data.paths": "{w}/nope.ar"}, ("--config.data.paths", "nope.ar")),
    Case("train", "data-empty-file", {"config.data.paths": "{empty}"}, ("--config.data.paths", "empty.jsonl")),
    Case("train", "arrayrecord-random-bytes", {"config.data.paths": "{ar_random}"}, ("random.ar", "ArrayRecord")),
    Case("train", "arrayrecord-truncated", {"config.data.paths": "{ar_cut}"}, ("cut.ar", "ArrayRecord")),
    Case("train", "jsonl-all-images-corrupt", {"config.data.paths": "{corrupt_images}"},
         ("corrupt_images.jsonl", "cannot decode image")),
    Case("train", "jsonl-images-escape-root", {"config.data.paths": "{escaping}"}, ("escaping.jsonl", "escapes")),
    Case("train", "json-truncated", {"config.data.paths": "{json_cut}"}, ("cut.json", "not valid JSON")),
    Case("train", "llava-json-as-our-records", {"config.data.paths": "{llava}"}, ("llava.json", "data.format=llava")),
    Case("train", "data-folder-not-tfds", {"config.data.paths": "{root}/images"},
         ("--config.data.paths", "not a prepared TFDS builder")),
    Case("train", "image-root-missing", {"config.data.image_root": "{w}/no_images"},
         ("--config.data.image_root", "no_images")),
    Case("train", "init-missing", {"config.model.init": "hf:{w}/nope"}, ("--config.model.init", "nope")),
    Case("train", "init-no-config", {"config.model.init": "hf:{no_config}"}, ("--config.model.init", "config.json")),
    Case("train", "init-safetensors-truncated", {"config.model.init": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("train", "init-shapes-disagree", {"config.model.init": "hf:{hf_shape}"}, ("hf_shape", "shapes disagree")),
    Case("train", "workdir-is-a-file", {"workdir": "{a_file}"}, ("--workdir", "not a folder")),
    Case("train", "config-field-unknown", {"config.data.nope": "1"}, ("--config.data.nope", "no field")),
    Case("train", "config-file-missing", {"config": "{w}/nope.py"}, ("--config", "nope.py")),
    Case("train", "template-unknown", {"config.data.template": "llava_llama3"},
         ("--config.data.template=llava_llama3", "llava_llama_3", "chatml")),
    Case("train", "template-tokens-missing", {"config.data.template": "chatml"},
         ("--config.data.template=chatml", "<|im_start|>", "<|im_end|>", "llama3")),
    Case("train", "prompts-unknown", {"config.data.prompts": "insight-v"},
         ("--config.data.prompts=insight-v", "insightv", "ours")),
    Case("train", "tokenizer-no-image-token", {"config.tokenizer": "{tok_no_image}"},
         ("--config.tokenizer", "<image>", "insightv-convert")),
    Case("train", "init-tower-unknown", {"config.model.init": "llava:{orig}"},
         ("--config.model.init", "mm_vision_tower", "--vision_config")),
    Case("train", "resume-over-bad-data", {"config.data.paths": "{ar_random}", "config.optim.total_steps": "4"},
         ("random.ar",), before=train_first, after=train_resumes),
    # insightv-train, task grpo (configs/grpo.py)
    Case("train", "grpo-question-without-answer", {**GRPO, "config.data.paths": "{questions_no_answer}"},
         ("no_answer.jsonl:1", "'answer'", "missing")),
    Case("train", "grpo-reward-unknown", {**GRPO, "config.grpo.rewards": "('answer','nope')",
                                          "config.grpo.reward_weights": "(1.0,1.0)"},
         ("--config.grpo.rewards", "unknown reward 'nope'", "format")),
    Case("train", "grpo-one-generation", {**GRPO, "config.grpo.num_generations": "1"},
         ("--config.grpo.num_generations=1", "G >= 2")),
    Case("train", "grpo-summary-without-chains", {**GRPO, "config.grpo.agent": "summary"},
         ("--config.grpo.agent=summary", "--config.grpo.chain_source")),
    Case("train", "grpo-reward-judge-unknown", {**GRPO, "config.grpo.reward_judge": "sumary"},
         ("--config.grpo.reward_judge='sumary'", "chain", "summary")),
    Case("train", "grpo-summary-judge-without-model", {**GRPO, "config.grpo.reward_judge": "summary"},
         ("--config.grpo.reward_judge=summary", "--config.grpo.summary_model")),
    Case("train", "grpo-llava-questions-without-answers", {**GRPO, "config.data.paths": "{llava_no_answer}",
                                                           "config.data.format": "llava"},
         ("llava_no_answer.json[0]", "id='p0'", "no usable answer")),
    # insightv-convert
    Case("convert", "input-missing", {"input": "{w}/nope"}, ("--input", "nope")),
    Case("convert", "input-wrong-type", {"input": "{a_file}"}, ("--input", "not a folder")),
    Case("convert", "input-no-config", {"input": "{no_config}"}, ("--input", "config.json")),
    Case("convert", "safetensors-truncated", {"input": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("convert", "safetensors-garbage", {"input": "hf:{hf_garbage}"}, ("hf_garbage/model.safetensors",)),
    Case("convert", "safetensors-dtype-disagrees", {"input": "hf:{hf_dtype}"},
         ("hf_dtype/model.safetensors", "tensor", "F16")),
    Case("convert", "shard-missing", {"input": "hf:{hf_shard}"}, ("model.safetensors.index.json", "model-00002")),
    Case("convert", "config-json-corrupt", {"input": "hf:{hf_config}"}, ("hf_config/config.json", "JSON")),
    Case("convert", "output-is-a-file", {"output": "{a_file}"}, ("--output", "not a folder")),
    Case("convert", "output-exists", {}, ("--output", "--overwrite"), before=convert_first, after=convert_intact),
    Case("convert", "vision-config-missing", {"vision_config": "{w}/nope.json"}, ("--vision_config", "nope.json")),
    Case("convert", "flag-missing", {"input": None}, ("--input",)),
    Case("convert", "template-unknown", {"template": "llava_llama3"}, ("--template=llava_llama3", "llava_llama_3")),
    Case("convert", "prompts-unknown", {"prompts": "insight-v"}, ("--prompts=insight-v", "insightv")),
    Case("convert", "tower-unknown", {"input": "llava:{orig}"}, ("--input", "mm_vision_tower", "--vision_config")),
    Case("convert", "vision-config-is-the-model-config",
         {"input": "llava:{orig}", "vision_config": "{orig}/config.json"},
         ("--vision_config", "not a CLIP / SigLIP vision config", "llava_llama")),
    Case("convert", "vision-config-not-json", {"input": "llava:{orig}", "vision_config": "{sft}"},
         ("--vision_config", "not a CLIP / SigLIP vision config")),
    Case("convert", "vision-config-for-hf-input", {"vision_config": "{tower}"}, ("--vision_config", "--input")),
    # insightv-eval
    Case("eval", "model-empty", {"config.reasoning_model": ""}, ("--config.reasoning_model", "empty")),
    Case("eval", "model-missing", {"config.reasoning_model": "params:{w}/nope"}, ("--config.reasoning_model", "nope")),
    Case("eval", "model-safetensors-truncated", {"config.reasoning_model": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("eval", "tokenizer-empty", {"config.tokenizer": ""}, ("--config.tokenizer", "empty")),
    Case("eval", "benchmarks-empty-flag", {"config.benchmarks": ""}, ("--config.benchmarks", "empty")),
    Case("eval", "benchmark-missing", {"config.benchmarks": "{w}/nope.tsv"}, ("--config.benchmarks", "nope.tsv")),
    Case("eval", "benchmark-empty-file", {"config.benchmarks": "{empty}"}, ("--config.benchmarks", "empty")),
    Case("eval", "benchmark-tsv-wrong-columns", {"config.benchmarks": "{tsv_wrong}"}, ("bench.tsv", "'index'")),
    Case("eval", "benchmark-jsonl-truncated", {"config.benchmarks": "{bench_cut}"}, ("bench.jsonl:2",)),
    Case("eval", "template-unknown", {"config.template": "llava_llama3"},
         ("--config.template=llava_llama3", "llava_llama_3")),
    Case("eval", "template-tokens-missing", {"config.template": "qwen_1_5"},
         ("--config.template=qwen_1_5", "<|im_start|>")),
    Case("eval", "prompts-unknown", {"config.prompts": "insight-v"},
         ("--config.prompts=insight-v", "insightv", "ours")),
    Case("eval", "tokenizer-no-image-token", {"config.tokenizer": "{tok_no_image}"},
         ("--config.tokenizer", "<image>", "insightv-convert")),
    Case("eval", "benchmark-image-missing", {"config.systems": "direct", "config.benchmarks": "{bench_no_image}"},
         ("bench_no_image.jsonl:2", "'train-1-0000001' counts as failed", "gone.png"),
         after=eval_reports_failed_question, status=0),
    Case("eval", "resume-over-bad-benchmark", {"config.systems": "direct",
                                               "config.benchmarks": "{root}/train.jsonl,{bench_cut}"},
         ("bench.jsonl:2",), before=eval_first, after=eval_resumes),
    # insightv-datagen
    Case("datagen", "questions-missing", {"config.questions": "{w}/nope.jsonl"}, ("--config.questions", "nope")),
    Case("datagen", "questions-empty-file", {"config.questions": "{empty}"}, ("--config.questions", "empty")),
    Case("datagen", "questions-truncated", {"config.questions": "{questions_cut}"}, ("questions.jsonl:2",)),
    Case("datagen", "questions-wrong-kind", {"config.questions": "{corrupt_images}"},
         ("corrupt_images.jsonl", "not questions")),
    Case("datagen", "question-images-missing", {**OPENAI, "config.questions": "{root}/train.jsonl",
                                                "config.image_root": "{w}"},
         ("train.jsonl", "train-1-0000000", "image")),
    Case("datagen", "questions-llava-missing", {"config.questions": "llava:{w}/nope.json"},
         ("--config.questions", "nope.json")),
    Case("datagen", "questions-synthetic-count", {"config.questions": "synthetic:lots"}, ("--config.questions",)),
    Case("datagen", "local-template-unknown", {**LOCAL, "config.backend.template": "llava_llama3"},
         ("--config.backend.template=llava_llama3", "llava_llama_3")),
    Case("datagen", "local-tokenizer-no-image-token", {**LOCAL, "config.backend.tokenizer": "{tok_no_image}"},
         ("--config.backend.tokenizer", "<image>")),
    Case("datagen", "server-url-empty", {**OPENAI, "config.backend.base_url": ""}, ("--config.backend.base_url",)),
    Case("datagen", "server-url-not-a-url", {**OPENAI, "config.backend.base_url": "localhost:8000"},
         ("--config.backend.base_url", "not an http")),
    Case("datagen", "server-down", {**OPENAI, "config.backend.base_url": "{closed}"},
         ("{closed}", "connection refused")),
    Case("datagen", "server-401", {**OPENAI, "config.backend.base_url": "{s401}"}, ("{s401}", "401")),
    Case("datagen", "server-unknown-model", {**OPENAI, "config.backend.base_url": "{s404}"},
         ("{s404}", "404", "does not exist")),
    Case("datagen", "server-overloaded", {**OPENAI, "config.backend.base_url": "{s503}"},
         ("{s503}", "4 of 4 paths failed"), after=datagen_retries_failed),
    Case("datagen", "server-fails-mid-run", {**OPENAI, "config.backend.base_url": "{revoked}"},
         ("{revoked}", "401"), after=datagen_resumes),
]


def _selected(request) -> list[Case]:
  """The cases this session's tests ask for (all, or those `-k` keeps): only they are run."""
  ids = {item.callspec.params["case"].id for item in request.session.items  # this module's rows only: other
         if getattr(item, "callspec", None) is not None  # modules have a `case` parameter of their own
         and isinstance(item.callspec.params.get("case"), Case)}
  return [c for c in CASES if c.id in ids] or CASES


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, tiny_cfg, cli):
  from data_gen import pipeline
  selected = _selected(request)
  root = str(tmp_path_factory.mktemp("faults"))
  m = build_material(root, tiny_cfg)
  m["fork_server"] = cli
  world = pipeline.make_world(_datagen_cfg())
  Teacher.world, Teacher.questions = world, [world.question(i) for i in range(4)]

  class Revoked(Teacher):
    good_requests, served = 0, 0  # set below: the first chunk's requests succeed

  with serve(Teacher) as teacher, serve(Revoked) as revoked, \
       serve(status_handler(401, "Incorrect API key provided")) as s401, \
       serve(status_handler(404, "The model `teacher` does not exist")) as s404, \
       serve(status_handler(503, "overloaded")) as s503:
    m.update(teacher=teacher, revoked=revoked, s401=s401, s404=s404, s503=s503, closed=closed_port_url())
    if any("{revoked}" in str(c.flags.values()) for c in selected):
      Revoked.good_requests = _requests_for_first_chunk(m, root)
    out = {}

    def one(case: Case) -> Result:
      w = os.path.join(root, "cases", case.id)
      os.makedirs(w)
      state = case.before(m, w) if case.before else None
      status, seconds, err, wall = run_cli(case.cli, {**BASE[case.cli], **case.flags}, m, w)
      lines = err.strip().splitlines()
      result = Result(status, seconds, wall, lines[-1] if lines else "", err)
      if case.after:
        try:
          case.after(m, w, state)
        except Exception as e:  # noqa: BLE001 - reported by the case's test
          result.after = f"{type(e).__name__}: {e}"
      print(f"{status:>3} {seconds:5.1f}s {wall:5.1f}s  {case.id:<40} {result.last[:150]}", flush=True)
      return result

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
      # the cases that run the CLI more than once first: they take longest
      futures = {case.id: pool.submit(one, case) for case in sorted(selected, key=lambda c: not (c.before or c.after))}
      for cid, fut in futures.items():
        out[cid] = fut.result()
  return out, m


def _datagen_cfg():
  from configs.datagen import get_config
  c = get_config()
  c.world.image_size = 56
  return c


def _requests_for_first_chunk(m, root) -> int:
  """How many requests the first chunk (2 questions, 1 path each) of the datagen cases makes: counted on a run
  against the teacher, so that the 'revoked' server fails from the second chunk on."""
  Teacher.served = 0
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI, "config.questions": "synthetic:2"}, m,
                           os.path.join(root, "count"))
  assert status == 0, err[-2000:]
  return Teacher.served


def test_the_table_covers_every_cli():
  assert len(CASES) >= 25 and {c.cli for c in CASES} == set(BASE)
  assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fault(results, case):
  out, m = results
  r = out[case.id]
  row = f"{case.id}: status {r.status}, {r.seconds:.1f}s ({r.wall:.1f}s wall), last line {r.last!r}\n"
  row += r.stderr[-3000:]
  assert r.status == case.status, row  # an input error: status 2, no traceback
  if case.status:
    assert r.seconds < LIMIT_S, row
    assert r.last.startswith("error: "), row
  named = r.last if case.status else r.stderr
  for word in case.words:
    assert word.format(**m) in named, f"{word.format(**m)!r} not named: {row}"
  assert not r.after, f"{case.id}: {r.after}"
