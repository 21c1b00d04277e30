"""The sequence-to-sequence parts of the tasks that write text (translation, captioning).

Shared by both: `tokenizing` (text into the decoder's tokens), `decoder` (the conditioned
decoder, with `attention`, `embedding_dropout` and `tied_embedding`), `losses`,
`generation_task` (what both tasks share as tasks), `decoding` (greedy and beam search)
and `bleu` (scores and their floors). Translation's own: `sentence_pairs` (its data set),
`translation_options`, `translation_model`, `ding` (the dictionary file), `lexicon_bias`,
`subwords` and `unknown_words`.
"""
