"""Inference: the batched KV-cache sampler and the Insight-V agents built on it.

    from insightv_jax import infer

    tokens = infer.generate(model, input_ids, pixel_values, image_sizes, attention_mask, max_new_tokens=128,
                            temperature=0.7, top_p=0.95, eos_ids=(eot_id,), seed=0)   # [b, max_new_tokens]
    # n samples per prompt from ONE prefill each: rows prompt-major (row p * n + s), one seed per output row
    tokens = infer.generate(model, input_ids, ..., max_new_tokens=128, temperature=0.7, num_samples=4, seed=0)

    reasoner = infer.Agent(model_r, tokenizer, "llama3", infer.GenerationConfig(max_new_tokens=512))
    summarizer = infer.Agent(model_s, tokenizer, "llama3", infer.GenerationConfig(max_new_tokens=32))
    examples = [infer.Example("q1", "Which bar is tallest?\nA. red\nB. blue", pil_image)]
    outputs = infer.two_agents(reasoner, summarizer, examples)  # [{"chain", "reply", "judgement"}, ...]
    chains = reasoner.with_generation(temperature=0.7).complete(convs, images, num_samples=4)  # 4 per conversation

    # a released Insight-V agent, prompted with Insight-V's own text (data.prompts.PROMPT_PRESETS)
    reasoner = infer.Agent(model_r, tokenizer, "llava_llama_3", preset="insightv")

`sampler` holds the token-level loop (`generate`, `truncate_at_stop_strings`, `bucket_length`); `agents` the
chat-level API (`Agent`, `reason`, `two_agents` and the `direct` / `chain_of_thought` baselines; `two_agent` is
the deprecated spelling of `two_agents`, kept for one release).
"""

from insightv_jax.infer.agents import Agent, Example, GenerationConfig, chain_of_thought, direct, reason, two_agents
from insightv_jax.infer.agents import two_agent as two_agent  # the deprecated spelling of two_agents (one release)
from insightv_jax.infer.sampler import bucket_length, generate, truncate_at_stop_strings

__all__ = ["Agent", "Example", "GenerationConfig", "bucket_length", "chain_of_thought", "direct", "generate", "reason",
           "truncate_at_stop_strings", "two_agents"]
