"""The console scripts (setup.py entry points), each absl `app.run` + `--config` (ml_collections) + `--workdir`.

    insightv-train     train.py     SFT of either agent, DPO, iterative DPO, --dry_run
    insightv-eval      eval.py      the two agents and the baselines on benchmark files
    insightv-convert   convert.py   checkpoint layouts: llava-hf safetensors <-> our params folders
    insightv-datagen   datagen.py   progressive synthesis, assessment, assembly
    insightv-demo      demo.py      the whole pipeline in miniature on CPU
"""
