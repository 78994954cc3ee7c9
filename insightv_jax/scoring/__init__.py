"""Answer scoring that evaluation and data generation both need: extracting the answer from a model's reply and
judging it against the ground truth. It sits below `eval`, `train` and `infer`; `data_gen` uses it too.

    from insightv_jax.scoring import is_correct
    is_correct("<output>B</output>", "B", choices=["cat", "dog"])   # True

  extract    our lmms-eval-style extraction and judging (is_correct)
  mmmu       MMMU's official parsing, judging and aggregation, quirks included
  mathvista  MathVista's official extraction (rules / LLM prompt), normalisation, equality and aggregation,
             plus our LLM-free approximation of its extractor
  compat     the constants those two copy from the official code (category tables, the extraction prompt)

Re-scoring whole prediction files: `insightv_jax.eval.prediction_files` (score_mmmu, score_mathvista, ...).
"""

from insightv_jax.scoring import compat, mathvista, mmmu
from insightv_jax.scoring.extract import answer_span, extract_choice, extract_yes_no, is_correct, parse_number

__all__ = ["answer_span", "compat", "extract_choice", "extract_yes_no", "is_correct", "mathvista", "mmmu",
           "parse_number"]
