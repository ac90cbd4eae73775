"""A reward for tests, named by import path (``spread_rewards:vowel_share``): it differs between
the completions of one group even for a model that never writes the answer format, so GRPO
has advantages to learn from and its weights must move."""


def vowel_share(completions, **kwargs):
    texts = [c if isinstance(c, str) else "".join(m.get("content", "") for m in c) for c in completions]
    return [sum(ch in "aeiou" for ch in text) / max(len(text), 1) for text in texts]
