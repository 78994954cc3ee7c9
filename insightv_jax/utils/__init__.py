"""Small shared utilities every stage uses: atomic files, JSONL journals, stage markers, the test kill hook."""
