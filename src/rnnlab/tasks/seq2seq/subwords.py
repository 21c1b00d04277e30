"""Subword units for translation: byte-pair encoding (Sennrich et al. 2016) learnt with
SentencePiece on the training split of one language.

Why: 16k sentence pairs have 13k English and 19k German word types, half of them seen
once, so a word vocabulary leaves rare words unknown on both sides. Pieces of words
("▁conver" "ts") let the encoder read a compound or inflection it never saw whole and the
decoder spell a word out of frequent parts. The pieces are written as space-separated
text, so the rest of the pipeline (TextVectorization, batching, decoding) is unchanged.
"""

from __future__ import annotations

import base64
import io

import sentencepiece

WORD_START = "▁"  # SentencePiece's mark for a piece that begins a word


class SubwordCodec:
    """Text to space-separated pieces and back, with a model that fits in a run's record."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def learn(cls, texts: list[str], vocabulary_size: int) -> SubwordCodec:
        """BPE of at most `vocabulary_size` pieces learnt on `texts` (already standardized).

        Deterministic (one thread, no sampling); the text is not normalised further, so
        joining the pieces gives back the text exactly."""
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type="bpe",
            character_coverage=1.0,
            normalization_rule_name="identity",
            hard_vocab_limit=False,  # a small text may have fewer pieces than asked
            num_threads=1,
            minloglevel=2,
        )
        return cls(model.getvalue())

    def segment(self, texts: list[str]) -> list[str]:
        """Each text as its pieces separated by spaces: "▁conver ts ▁me ▁."."""
        return [" ".join(pieces) for pieces in self.processor.encode(texts, out_type=str)]

    @staticmethod
    def join(pieces: str) -> str:
        """Space-separated pieces back to words: a piece without the word-start mark
        continues the word before it. Works on any piece sequence a decoder writes."""
        return "".join(pieces.split(" ")).replace(WORD_START, " ").strip()

    def to_state(self) -> str:
        """The model as text, for a stored run's JSON record."""
        return base64.b64encode(self.model_proto).decode("ascii")

    @classmethod
    def from_state(cls, state: str) -> SubwordCodec:
        return cls(base64.b64decode(state))
