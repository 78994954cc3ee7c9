"""What needs both the library (`insightv_jax`) and the data generator (`data_gen`), and every command line.

    iterative_dpo.py   K rounds of: sample chains from the policy -> assess -> pairs -> DPO (Insight-V 3.3)
    demo.py            the whole pipeline in miniature (`make demo`), demo_report.py its report
    cli/               the console scripts: insightv-train, -eval, -convert, -datagen, -demo

Arrows: pipelines -> data_gen -> insightv_jax, never back (the contracts in .importlinter).
"""
