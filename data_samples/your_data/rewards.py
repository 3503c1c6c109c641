"""A reward of your own for ``mimolab grpo``, in TRL's signature: the completions, then the columns it
needs by name (here ``max_words``, a field of every record in prompts.jsonl); one float per completion.

    mimolab grpo CHECKPOINT --prompts data_samples/your_data/prompts.jsonl \
        --reward verifiable --reward data_samples.your_data.rewards:short_answer
"""


def short_answer(completions, max_words, **kwargs):
    """1 when the final answer (after any ``</think>``) has at most ``max_words`` words; less the longer it runs."""
    scores = []
    for completion, limit in zip(completions, max_words):
        words = len(completion.split("</think>")[-1].replace("<|im_end|>", "").split())
        scores.append(1.0 if words <= limit else limit / words)
    return scores
