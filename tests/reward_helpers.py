"""A TRL-style reward importable by a reward-service process (tests put this folder on PYTHONPATH)."""


def varied_reward(completions, **kwargs):
    """An arbitrary but fixed score per text, so random completions of one prompt differ in reward."""
    return [sum(map(ord, c if isinstance(c, str) else c[-1]["content"])) % 7 / 6 for c in completions]
