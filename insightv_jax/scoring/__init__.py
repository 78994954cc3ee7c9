"""Answer scoring that evaluation and data generation both need: extracting the answer from a model's reply and
judging it against the ground truth. It sits below `eval`, `train` and `infer`; `data_gen` uses it too.

    from insightv_jax.scoring import is_correct
    is_correct("<output>B</output>", "B", choices=["cat", "dog"])   # True
"""

from insightv_jax.scoring.extract import answer_span, extract_choice, extract_yes_no, is_correct, parse_number

__all__ = ["answer_span", "extract_choice", "extract_yes_no", "is_correct", "parse_number"]
