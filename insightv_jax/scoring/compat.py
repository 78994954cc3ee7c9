"""Constants copied verbatim from the official MMMU and MathVista scorers, so our scores equal theirs.

These are compatibility data, not choices of ours: change one and the numbers stop being comparable with
published results. Each block names the file it comes from (the repository's HEAD when it was copied):

  MMMU       github.com/MMMU-Benchmark/MMMU @ bb0b95a (2025-05-19)
  MathVista  github.com/lupantech/MathVista @ 53d5258 (2025-09-28)

The rules that use them live in `scoring/mmmu.py` and `scoring/mathvista.py`.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------- MMMU

# mmmu/utils/eval_utils.py: `random.seed(42)` at import; every unparseable multiple-choice reply then takes
# one `random.choice(all_choices)` from that global stream, in the order the replies are parsed.
MMMU_SEED = 42

# mmmu/utils/data_utils.py: CAT_SHORT2LONG. `main_parse_and_eval.py --subject ALL` walks the subjects in this
# order (so this order also fixes which reply gets which random draw).
MMMU_CAT_SHORT2LONG = {
    "acc": "Accounting",
    "agri": "Agriculture",
    "arch": "Architecture_and_Engineering",
    "art": "Art",
    "art_theory": "Art_Theory",
    "bas_med": "Basic_Medical_Science",
    "bio": "Biology",
    "chem": "Chemistry",
    "cli_med": "Clinical_Medicine",
    "cs": "Computer_Science",
    "design": "Design",
    "diag_med": "Diagnostics_and_Laboratory_Medicine",
    "econ": "Economics",
    "elec": "Electronics",
    "ep": "Energy_and_Power",
    "fin": "Finance",
    "geo": "Geography",
    "his": "History",
    "liter": "Literature",
    "manage": "Manage",
    "mark": "Marketing",
    "mate": "Materials",
    "math": "Math",
    "mech": "Mechanical_Engineering",
    "music": "Music",
    "phar": "Pharmacy",
    "phys": "Physics",
    "psy": "Psychology",
    "pub_health": "Public_Health",
    "socio": "Sociology",
}

# mmmu/utils/data_utils.py: DOMAIN_CAT2SUB_CAT (`main_eval_only.py` reports the domains, and the subjects within
# each, in this order).
MMMU_DOMAIN_CAT2SUB_CAT = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"],
}

# mmmu/utils/eval_utils.py: parse_multi_choice_response strips these characters from both ends, one after the
# other in this order (so "A.," loses the comma, then the full stop).
MMMU_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")

# mmmu/utils/eval_utils.py: parse_open_response's words that introduce an answer; '=' is added for the last
# sentence only. A sub-response whose tail is one of MMMU_TRIVIAL_TAILS is not kept.
MMMU_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
MMMU_TRIVIAL_TAILS = (":", ",", ".", "!", "?", ";", ":", "'")

# -------------------------------------------------------------------------------------------- MathVista

# evaluation/prompts/ext_ans.py: demo_prompt, exactly (its blank first and last lines included; the official
# create_test_prompt strips it before use). The double space in "line  graph" is in the original, and so are the
# "\n" escapes of the last example (a plain string there too, so they are newlines in the prompt).
MATHVISTA_EXTRACTION_DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""  # noqa: E501  (kept byte for byte)

# models/gpt.py: GPT_Model's sampling for the extractor (greedy, one completion, up to 1024 tokens).
MATHVISTA_EXTRACTION_SAMPLING = {"temperature": 0, "max_tokens": 1024, "n": 1}

# evaluation/calculate_score.py: the metadata fields the per-category accuracies are computed over, in order.
MATHVISTA_SCORE_KEYS = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade",
                        "skills")
