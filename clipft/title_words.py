"""Title words: a bag of the text tower's tokens beside its transformer.

A sentence encoder's pooled output keeps what a title means and loses part of which words it
holds; a catalogue's words (a brand's line, "Thermal", "Flip Flops") say things such as the
season that its meaning does not. On the fashion split a logistic regression on TF-IDF of the
title words gets season 0.807 on the test split where one on MiniLM's pooled output gets 0.765
(benchmarks/title_words_probe.py, benchmarks/title_ablation.py).

The bag reads the token ids the tower already gets: each token and each pair of neighbouring
tokens (hashed into ``buckets``), averaged as ``rank``-dimensional embeddings and projected into
the joint space. The projection starts at zero, so a tower with words added embeds exactly as
before until it is trained, and checkpoints without the bag load into it unchanged. Special
tokens (padding, start, end) are left out.

It trains only in runs that read titles (``inputs`` text or fusion): alignment on photo-title
pairs and photos-only runs leave it as it is (:func:`lock_title_words`).

The bag is added with a forward hook on the text tower (``"clipft": {"title_words": BUCKETS}``
in a model's JSON config), so the tower's parameter names and its cache of pooled transformer
outputs (:mod:`clipft.cache.text_features`, which adds the bag itself) are unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

RANK = 64  # the embedding width of a word: 4M weights (16 MiB) with 32,768 pair buckets
PAIR_PRIME = 1_000_003  # hashes a pair of token ids into the buckets


class WordBag(nn.Module):
    """(batch, output_dim) from (batch, length) token ids: the mean embedding of the tokens and
    of the hashed pairs of neighbouring tokens, projected (see the module docstring)."""

    def __init__(self, vocab_size: int, special_ids: list[int], output_dim: int, buckets: int, rank: int = RANK):
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, buckets
        self.register_buffer("special_ids", torch.tensor(sorted(set(special_ids)), dtype=torch.long), persistent=False)
        self.embedding = nn.Embedding(vocab_size + buckets, rank)
        nn.init.normal_(self.embedding.weight, std=rank**-0.5)
        self.proj = nn.Linear(rank, output_dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, buckets={self.buckets}"

    def ids_and_mask(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 2 * length - 1) bag ids, and which of them are words (not special tokens)."""
        tokens = tokens.long()
        word = ~torch.isin(tokens, self.special_ids.to(tokens.device))
        pairs = self.vocab_size + (tokens[:, :-1] * PAIR_PRIME + tokens[:, 1:]) % self.buckets
        ids = torch.cat([tokens.clamp(0, self.vocab_size - 1), pairs], dim=1)
        return ids, torch.cat([word, word[:, :-1] & word[:, 1:]], dim=1)

    def inert(self) -> bool:
        """Locked at zero (an image-only run, a model never trained on titles): it adds nothing,
        so callers skip it and the tokenising it needs, a few ms on every caption batch."""
        return not self.proj.weight.requires_grad and not self.proj.weight.any()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, mask = self.ids_and_mask(tokens)
        weights = mask.to(self.embedding.weight.dtype)
        summed = (self.embedding(ids) * weights[..., None]).sum(dim=1)
        return self.proj(summed / weights.sum(dim=1, keepdim=True).clamp(min=1))


def _add_words(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output if module.words.inert() else output + module.words(args[0]).to(output.dtype)


def add_title_words(model: nn.Module, tokenizer, buckets: int) -> nn.Module:
    """Give ``model``'s text tower (a Hugging Face tower, as ``lite0-minilm``'s) a :class:`WordBag`
    of ``buckets`` hashed pairs, leaving out ``tokenizer``'s special tokens; returns the model,
    changed in place."""
    text = getattr(model, "text", None)
    config = getattr(text, "config", None)
    if config is None or not hasattr(text, "transformer"):
        raise ValueError("title_words needs a Hugging Face text tower (model.text with a config); "
                         f"{type(model).__name__} has none")
    special = list(getattr(getattr(tokenizer, "tokenizer", None), "all_special_ids", []))
    special += [config.pad_token_id] if config.pad_token_id is not None else []
    # A fixed draw, apart from the global generator: the same weights at every load (they key the
    # text cache, and a checkpoint that predates the bag keeps them) and no change to later draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text.words = WordBag(config.vocab_size, special, text.output_dim, buckets).to(text.proj.weight)
    text.register_forward_hook(_add_words)
    return model


def lock_title_words(model: nn.Module) -> None:
    """Keep the bag as it is (at zero in a model that was not fine-tuned on titles): for runs
    that read no titles, where it would only see the captions and what it learnt would change
    image-only models for nothing it was built for."""
    words = getattr(getattr(model, "text", None), "words", None)
    if words is not None:
        words.requires_grad_(False)


def check_loaded(keys) -> None:
    """Fail as a strict ``load_state_dict`` would on what it returned (``keys``), but for the
    bag's own weights: a checkpoint that predates the bag embeds as it did, the bag being at zero."""
    missing = [k for k in keys.missing_keys if not k.startswith("text.words.")]
    if missing or keys.unexpected_keys:
        raise RuntimeError(f"Error(s) in loading state_dict: missing keys {missing[:5]}, "
                           f"unexpected keys {keys.unexpected_keys[:5]}")
