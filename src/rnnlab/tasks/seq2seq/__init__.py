"""Sequence-to-sequence helpers of translation and captioning: decoding, attention,
the dictionary's lexicons, subwords, tied embeddings, unknown words."""
