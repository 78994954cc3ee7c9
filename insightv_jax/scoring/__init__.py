"""Answer scoring that evaluation and data generation both need: extracting an answer from a reply and judging
it against the ground truth (`extract.py`). It sits below `eval`, `train` and `infer`, and `data_gen` uses it."""
