"""The Ding dictionary file (`trans-de-en`): its example sentences, word groups and word
translations, read line by line.

Each line is `DE | ... :: EN | ...`: aligned sub-entries, each a list of synonyms with
annotations ({m}, [coll.], <Abk.>). Translation reads it three ways: the sentence pairs
that make its data set, the word groups it may add to training, and the one-word entries
behind its lexicons. Lines that hold a held-out sentence give no words or word groups.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Callable, Container, Iterator
from pathlib import Path

from rnnlab.tasks.seq2seq import lexicon_bias, tokenizing

DICTIONARY = "usr/share/trans/de-en"
ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>")  # {m}, [coll.], <Abk.>
SENTENCE_END = (".", "!", "?")
# "; " between synonyms, not inside a gloss: "waste of time (money; energy)" is one
SYNONYM_SEPARATOR = re.compile(r"; (?![^()]*\))")
ONE_WORD = re.compile(r"\w+")  # a German entry that standardizes to a single token


def read_sentence_pairs(path: Path) -> list[tuple[str, str]]:
    """Example sentences of `DE :: EN` entries, in file order, without duplicates: the
    first synonym of both sides of an aligned sub-entry, when both end a sentence."""
    pairs: dict[tuple[str, str], None] = {}
    for line_pairs in aligned_entries(path):
        for pair in line_pairs:
            if is_sentence(pair):
                pairs[pair] = None
    if not pairs:
        raise ValueError(f"{path}: no sentence pairs in the file")
    return list(pairs)


def read_phrase_pairs(
    path: Path,
    held_out: Container[tuple[str, str]],
    min_words: int,
    whole_annotations: bool = False,
) -> list[tuple[str, str]]:
    """The dictionary's word-group entries ("in den Alpen :: in the Alps") of at least
    `min_words` words on both sides, for extra training pairs, without duplicates.

    Lines that hold a held-out sentence pair give nothing: their entries were written
    around that sentence, so they could teach a test sentence's rare words."""
    pairs: dict[tuple[str, str], None] = {}
    for line_pairs in entries_outside(path, held_out, whole_annotations):
        for pair in line_pairs:
            long_enough = all(len(side.split()) >= min_words for side in pair)
            if long_enough and not is_sentence(pair):
                pairs[pair] = None
    return list(pairs)


def read_lexicon(
    path: Path,
    held_out: Container[tuple[str, str]],
    standardize: Callable = tokenizing.standardize,
    glosses: bool = True,
    whole_annotations: bool = False,
) -> dict[str, str]:
    """German word -> its most frequent English translation among the dictionary's
    one-word German entries ("Denkungsart :: way of thinking"; "to " dropped from verbs),
    both standardized as the decoder's words are. With `glosses` false, parenthesised
    glosses are dropped first: "Orange (Frucht) :: orange (fruit)" translates to "orange".

    As for phrases, lines that hold a held-out sentence pair give nothing."""
    translations: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line_pairs in entries_outside(path, held_out, whole_annotations):
        for german, english in line_pairs:
            if not glosses:
                german, english = (lexicon_bias.without_glosses(side) for side in (german, english))
            if len(german.split()) == 1 and english and not is_sentence((german, english)):
                translations[german.lower()][english.removeprefix("to ")] += 1
    germans = list(translations)
    englishes = tokenizing.standardized_texts(
        [translations[german].most_common(1)[0][0] for german in germans], standardize
    )
    return {
        german: english
        for german, english in zip(germans, englishes, strict=True)
        if ONE_WORD.fullmatch(german) and english
    }


def aligned_entries(path: Path) -> Iterator[list[tuple[str, str]]]:
    """Per `DE :: EN` line, its aligned sub-entries as (German, English) first synonyms."""
    for line in aligned_synonyms(path):
        yield [(german[0], english[0]) for german, english in line]


def entries_outside(
    path: Path, held_out: Container[tuple[str, str]], whole_annotations: bool = False
) -> Iterator[list[tuple[str, str]]]:
    """`aligned_entries` of the lines that hold no held-out sentence pair."""
    for line in synonyms_outside(path, held_out, whole_annotations):
        yield [(german[0], english[0]) for german, english in line]


def synonyms_outside(
    path: Path, held_out: Container[tuple[str, str]], whole_annotations: bool = False
) -> Iterator[list[tuple[list[str], list[str]]]]:
    """`aligned_synonyms` of the lines that hold no held-out sentence pair: their entries
    were written around that sentence, so they could teach a test sentence's rare words.
    Either way of splitting finds the same sentences (checked on trans-de-en 1.9)."""
    for line in aligned_synonyms(path, whole_annotations):
        if not any((german[0], english[0]) in held_out for german, english in line):
            yield line


def aligned_synonyms(
    path: Path, whole_annotations: bool = False
) -> Iterator[list[tuple[list[str], list[str]]]]:
    """Per `DE :: EN` line, its aligned sub-entries as (German synonyms, English synonyms),
    annotations removed.

    Each side splits on ` | ` into aligned sub-entries and each of those on `; ` into
    synonyms. `whole_annotations` removes annotations before that split and keeps glosses
    whole, so "to go {went; gone}" is "to go"; without it (how the sentence pairs are
    read, so that the split never moves) it gives "to go {went" and "gone}"."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            german, separator, english = line.partition(" :: ")
            german_parts, english_parts = german.split(" | "), english.split(" | ")
            if not separator or len(german_parts) != len(english_parts):
                raise ValueError(
                    f"{path}:{number}: expected 'DE | ... :: EN | ...' with as many "
                    f"sub-entries on each side, got {line[:60]!r}"
                )
            yield [
                (
                    synonyms(german_part, whole_annotations),
                    synonyms(english_part, whole_annotations),
                )
                for german_part, english_part in zip(german_parts, english_parts, strict=True)
            ]


def is_sentence(pair: tuple[str, str]) -> bool:
    return all(side.endswith(SENTENCE_END) for side in pair)


def synonyms(entry: str, whole_annotations: bool = False) -> list[str]:
    if whole_annotations:
        return [
            " ".join(synonym.split())
            for synonym in SYNONYM_SEPARATOR.split(ANNOTATION.sub(" ", entry))
        ]
    return [" ".join(ANNOTATION.sub(" ", synonym).split()) for synonym in entry.split("; ")]


@functools.cache
def ding_translations(
    path: Path,
    held_out: frozenset[tuple[str, str]],
    standardize: Callable,
    whole_annotations: bool = False,
) -> dict[str, collections.Counter]:
    """Every one-word translation of each German word in the Ding file, counted, without
    the lines of held-out sentences. Read once a process (about 7 s): every model built
    with a lexicon bias reads it. Callers must not change it."""
    return lexicon_bias.word_translation_counts(
        synonyms_outside(path, held_out, whole_annotations), standardize
    )


@functools.cache
def dictionary_lexicon(
    path: Path,
    held_out: frozenset[tuple[str, str]],
    standardize: Callable,
    glosses: bool,
    whole_annotations: bool,
) -> dict[str, str]:
    """`read_lexicon`, read once a process (about 5 s): a run reads it at test and again when
    its stored model is checked on an example, and `rnnlab evaluate` and `predict` read it.
    Callers must not change it."""
    return read_lexicon(path, held_out, standardize, glosses, whole_annotations)


@functools.cache
def dictionary_phrases(
    path: Path, held_out: frozenset[tuple[str, str]], min_words: int, whole_annotations: bool
) -> list[tuple[str, str]]:
    """`read_phrase_pairs`, read once a process (about 5 s): every load of the task with
    `task.dictionary_phrases` needs them. Callers must not change the list."""
    return read_phrase_pairs(path, set(held_out), min_words, whole_annotations)
