"""SFT input pipeline throughput vs what the train step consumes, at the shared benchmark config.

The loader reads ArrayRecord SFT records of the synthetic world (600x600 PNG images -> 5 AnyRes tiles of
336 px), decodes, tiles, tokenizes and pads to 512 with 2 Grain worker processes. The train step's
consumption is batch / step time of our jitted SFT step at the same config (benchmarks/common.py), measured in
this run. Prints both in examples/s and the ratio (goal >= 2: the loader is never the bottleneck).

    python benchmarks/loader.py [--examples=256]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 256, "Examples to time the loader over (after the first batch).")
flags.DEFINE_integer("workers", 2, "Grain worker processes.")


def main(argv):
  del argv
  args = FLAGS

  from benchmarks import common
  from configs import train_base
  from data_gen.synthetic.world import World, WorldConfig
  from insightv_jax.data import loader, prompts, records, sources
  from insightv_jax.data.tokenizer import fit_model_config, train_bpe

  with tempfile.TemporaryDirectory() as root:
    world = World(WorldConfig(image_size=600), seed=0)
    n_q = 64
    qs = world.write(root, "train", n_q)
    sft = [records.ReasoningSFT(id=q.id, images=q.images, question=q.question,
                                reasoning=prompts.format_chain(world.teacher_path(q).steps)) for q in qs]
    records.write_array_record(f"{root}/sft.ar", sft)
    tok = train_bpe([r.reasoning + " " + r.question for r in sft], 2000, "llama3")
    cfg = fit_model_config(common.bench_config(), tok)
    lcfg = loader.LoaderConfig.from_config(train_base.data_section(), template="llama3", prompts="ours",
                                           max_len=common.SEQ, batch_size=common.BATCH, image_root=root,
                                           worker_count=args.workers, seed=0)
    it = iter(loader.make_dataset(sources.ArrayRecordSource(f"{root}/sft.ar"), lcfg, cfg, tok))
    next(it)  # workers up
    n_batches = args.examples // common.BATCH
    t0 = time.perf_counter()
    for _ in range(n_batches):
      batch, _ = next(it)
    dt = time.perf_counter() - t0
    it.close()
    loader_eps = n_batches * common.BATCH / dt
    assert batch.pixel_values.shape[1:] == (5, 3, 336, 336), batch.pixel_values.shape

  step = common.run_side(os.path.join(os.path.dirname(__file__), "train_step.py"), "jax",
                         [f"--ckpt={_bench_ckpt()}", "--steps=3"])
  step_eps = common.BATCH / step["step_s"]
  print(f"SFT loader, 336-px tiles (5 per image), seq {common.SEQ}, {args.workers} workers: "
        f"{loader_eps:.1f} examples/s")
  print(f"train step consumption at the benchmark config: {step_eps:.2f} examples/s "
        f"({step['step_s'] * 1e3:.0f} ms/step, batch {common.BATCH})")
  print(f"ratio loader / train step: {loader_eps / step_eps:.1f}x (goal >= 2)")


def _bench_ckpt() -> str:
  import torch
  from transformers import LlavaNextForConditionalGeneration

  from benchmarks import common
  torch.manual_seed(0)
  path = tempfile.mkdtemp()
  LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(path)
  return path


if __name__ == "__main__":
  app.run(main)
