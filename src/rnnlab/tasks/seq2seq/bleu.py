"""Scoring written text: sacrebleu's corpus BLEU of the decodes, beside the floors a
decoder must clear for its BLEU to mean anything (one fixed text; the source copied).

References are standardized as the decoder's words were, so casing and spacing don't count.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import sacrebleu

from rnnlab.tasks.seq2seq.tokenizing import standardize, standardized_texts


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (0-100) on standardized text, so casing and spacing don't count."""
    return sacrebleu.corpus_bleu(hypotheses, [references], force=True).score


def score_decodes(
    hypotheses: list[str],
    sources: list[str],
    references: list[str],
    samples: int,
    standardize: Callable = standardize,
) -> tuple[dict[str, float], str]:
    """Corpus BLEU of decodes against references standardized as the decoder's words
    were, and a table of the first `samples`."""
    references = standardized_texts(references, standardize)
    table = samples_table(sources[:samples], references[:samples], hypotheses[:samples])
    return {"bleu": corpus_bleu(hypotheses, references)}, table


def best_constant_baseline(
    train_texts: list[str],
    references: list[str],
    candidates: int = 50,
    judges: int = 1000,
    standardize: Callable = standardize,
) -> dict[str, float]:
    """BLEU of answering every test example with one fixed text: of the training split's
    `candidates` most frequent texts, the one that scores best against its first `judges`.

    It is the floor of a decoder that ignores its input, chosen without the test split.
    The most frequent text alone is a weaker floor: a short one has no 4-grams and scores 0
    ("flags country flag" for the emoji, "there you are !" for the Ding pairs).
    """
    train = standardized_texts(train_texts, standardize)
    frequent = [text for text, _ in collections.Counter(train).most_common(candidates)]
    judged = train[:judges]
    best = max(frequent, key=lambda text: corpus_bleu([text] * len(judged), judged))
    baseline = corpus_bleu([best] * len(references), standardized_texts(references, standardize))
    return {"baseline_bleu": baseline}


def copy_bleu(
    sources: list[str], references: list[str], standardize: Callable = standardize
) -> dict[str, float]:
    """BLEU of answering with the source unchanged: names, numbers and punctuation carry
    over between languages (0.3 on the Ding pairs), a second floor for translation."""
    sources, references = (standardized_texts(t, standardize) for t in (sources, references))
    return {"copy_bleu": corpus_bleu(sources, references)}


def samples_table(sources: list[str], references: list[str], hypotheses: list[str]) -> str:
    rows = zip(sources, references, hypotheses, strict=True)
    return "".join(f"source:    {s}\nreference: {r}\ndecoded:   {h}\n\n" for s, r, h in rows)
