"""Shared by the tasks that generate text (translation, captioning): tokens in and out,
a decoder conditioned on a context vector, greedy decoding, token accuracy and BLEU.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import keras
import numpy as np
import sacrebleu
import tensorflow as tf
from keras import layers

from rnnlab.config import ConfigError
from rnnlab.tasks.base import TaskDefaults
from rnnlab.tasks.seq2seq.tied_embedding import TiedEmbedding

START, END = "[start]", "[end]"  # brackets survive `standardize`, so these stay one token
UNKNOWN = "[UNK]"  # TextVectorization's token for words outside the vocabulary


def standardize(text: tf.Tensor) -> tf.Tensor:
    """Lower-case and split punctuation off words: `Go!` becomes `go !`.

    ASCII only: RE2's `\\w` is [0-9A-Za-z_], so "schön" becomes "sch ö n". Runs stored
    before `standardize_unicode` read their text this way; captions are English names."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"([^\w\s\[\]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def standardize_unicode(text: tf.Tensor) -> tf.Tensor:
    """`standardize` for any alphabet: "Schön!" becomes "schön !", a word of its own."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"([^\pL\pM\pN_\s\[\]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def target_vectorizer(
    texts: tf.data.Dataset,
    vocabulary_size: int | None,
    length: int,
    standardize: Callable | None = standardize,
) -> layers.TextVectorization:
    """Token ids of `[start] text [end]`, `length + 1` long: decoder input and target overlap.

    `standardize=None` takes the text's space-separated tokens as they are (subwords)."""
    vectorizer = layers.TextVectorization(
        max_tokens=vocabulary_size, standardize=standardize, output_sequence_length=length + 1
    )
    vectorizer.adapt(texts.map(with_start_and_end).batch(1024))
    return vectorizer


def with_start_and_end(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([START, text, END], separator=" ")


def teacher_forcing(
    vectorizer: layers.TextVectorization, text: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The decoder reads `[start] w1 .. wt` and is trained to predict `w1 .. wt [end]`.

    Both are as long as the text (batches pad them to their longest, see `batches`).
    """
    token_ids = without_padding(vectorizer(with_start_and_end(text)))
    return token_ids[..., :-1], token_ids[..., 1:]


def without_padding(token_ids: tf.Tensor) -> tf.Tensor:
    """One text's token ids up to its last real one (at least one id, so never empty)."""
    length = tf.maximum(tf.reduce_sum(tf.cast(token_ids != 0, tf.int32)), 1)
    return token_ids[:length]


def masked_crossentropy(y_true, y_pred, label_smoothing: float = 0.0):
    """Cross-entropy of the next token, averaged over real tokens: padding is not learned.

    With `label_smoothing` ε the target is (1 - ε) on the right token and ε spread evenly
    over the vocabulary (Szegedy et al. 2016): the model is not pushed to certainty on a
    small training set, which Sennrich & Zhang (2019) found to help low-resource NMT.

    It reads the scores under the model's softmax where the graph has them, as
    logsumexp(z) - z_y: TensorFlow's fused sparse cross-entropy took 17 ms of a
    translation step's 200 ms of CPU (one thread an op), this about 10 (benchmarks/RESULTS.md).
    """
    scores = softmax_scores(y_pred)
    y_true = keras.ops.cast(y_true, "int32")
    # A one-hot product, not a gather: the gather's gradient is a scatter into a zeroed
    # [batch × steps × vocabulary] tensor, which took longer than the loss it replaced.
    targets = keras.ops.one_hot(y_true, keras.ops.shape(scores)[-1], dtype=scores.dtype)
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / scores.shape[-1]
    losses = keras.ops.logsumexp(scores, axis=-1) - keras.ops.sum(scores * targets, axis=-1)
    real = keras.ops.cast(y_true != 0, losses.dtype)
    return keras.ops.sum(losses * real) / keras.ops.maximum(keras.ops.sum(real), 1.0)


def softmax_scores(probabilities):
    """Scores whose softmax gives `probabilities`: the softmax's own input in a TensorFlow
    graph (as Keras's losses read it), else log(p), clipped as Keras clips it."""
    operation = getattr(probabilities, "op", None)
    if operation is not None and operation.type == "Softmax" and len(operation.inputs) == 1:
        return operation.inputs[0]
    probabilities = keras.ops.convert_to_tensor(probabilities, "float32")
    return keras.ops.log(keras.ops.clip(probabilities, keras.config.epsilon(), 1.0))


def smoothed_crossentropy(label_smoothing: float) -> Callable:
    """`masked_crossentropy` with its label smoothing fixed, for `model.compile`."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if not label_smoothing:
        return masked_crossentropy

    def loss(y_true, y_pred):
        return masked_crossentropy(y_true, y_pred, label_smoothing)

    return loss


class TextGenerationTask(TaskDefaults):
    """What the tasks that write text share: a decoder stack, the masked loss, token accuracy."""

    has_decoder = True  # train.run passes them a decoder stack of the chosen cell
    loss = staticmethod(masked_crossentropy)

    @property
    def metrics(self) -> list:
        return [TokenAccuracy()]  # a fresh metric for every compiled model


class TokenAccuracy(keras.metrics.Metric):
    """Share of non-padding target tokens predicted right, under teacher forcing."""

    def __init__(self, name: str = "token_accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true = keras.ops.cast(y_true, "int64")
        real = keras.ops.cast(y_true != 0, "float32")
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int64")
        hits = keras.ops.cast(predicted == y_true, "float32")
        self.correct.assign_add(keras.ops.sum(hits * real))
        self.total.assign_add(keras.ops.sum(real))

    def result(self):
        return self.correct / keras.ops.maximum(self.total, 1.0)


ATTENTION_KINDS = ("none", "dot", "additive")


def conditioned_decoder(
    context: keras.KerasTensor,
    vocabulary_size: int,
    embedding_dim: int,
    decoder: Callable[[keras.KerasTensor], keras.KerasTensor],
    memory: keras.KerasTensor | None = None,
    attention: str = "none",
    attention_units: int = 128,
    embedding_dropout: float = 0.0,
    output_from_attention: Callable | None = None,
    word_dropout: float = 0.0,
    tied_embeddings: bool = False,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Decoder input tokens and next-token probabilities, every step seeing the context.

    As in Cho et al. (2014), the context vector is fed to the decoder at each step rather
    than through its initial state, so any cell works, whatever its states look like.
    With `attention` other than "none", each decoder output also looks back over `memory`
    (the encoder's outputs, one per source position) before the next token is chosen.
    `embedding_dropout` and `word_dropout` drop parts of the input tokens' embeddings and
    whole input tokens in training (`embedding_dropouts`): the decoder learns not to lean
    on its own previous words alone.
    `output_from_attention(scores, attention weights)`, if given, turns the next-token
    scores into probabilities instead of a plain softmax (`lexicon_bias.LexiconBias`).
    With `tied_embeddings`, the next-token scores read the input embeddings' matrix
    (`TiedEmbedding`) after a projection to their width, instead of a layer of their own.
    """
    # Any number of steps: training batches are as long as their longest text.
    tokens = keras.Input(shape=(None,), dtype="int64", name="decoder_tokens")
    # Index 0 is padding: the mask keeps it out of the loss.
    embedding = TiedEmbedding if tied_embeddings else layers.Embedding
    words = embedding(vocabulary_size, embedding_dim, mask_zero=True, name="decoder_words")
    embedded = embedding_dropouts(words(tokens), embedding_dropout, word_dropout, "decoder")
    repeated = EachStep(name="context_each_step")([context, embedded])
    decoded = decoder(layers.Concatenate(name="token_and_context")([embedded, repeated]))
    if attention == "none":
        if output_from_attention:
            raise ConfigError("an output that reads the attention needs attention")
        weights = None
    else:
        decoded, weights = attend(decoded, memory, attention, attention_units)
    if tied_embeddings:
        projected = layers.Dense(embedding_dim, name="next_token_projection")(decoded)
        scores = words(projected, reverse=True)
        if not output_from_attention:
            return tokens, layers.Activation("softmax", name="next_token")(scores)
    elif output_from_attention:
        scores = layers.Dense(vocabulary_size, name="next_token")(decoded)
    else:
        probabilities = layers.Dense(vocabulary_size, activation="softmax", name="next_token")
        return tokens, probabilities(decoded)
    return tokens, output_from_attention(scores, weights)


def embedding_dropouts(
    embedded: keras.KerasTensor, parts: float, words: float, side: str
) -> keras.KerasTensor:
    """Embeddings with a fraction `parts` of their entries and a fraction `words` of whole
    tokens dropped in training. Dropping whole words (Gal & Ghahramani 2016; Sennrich &
    Zhang 2019 for small data) hides a word entirely, where dropping entries leaves a
    noisy trace of every word."""
    if parts:
        embedded = layers.Dropout(parts, name=f"{side}_embedding_dropout")(embedded)
    if words:
        # One draw per token, shared by all its embedding's entries.
        embedded = layers.Dropout(words, noise_shape=(None, None, 1), name=f"{side}_word_dropout")(
            embedded
        )
    return embedded


@keras.saving.register_keras_serializable(package="rnnlab")
class EachStep(layers.Layer):
    """[context, sequence] -> the context repeated at each of the sequence's steps.

    Keras's RepeatVector needs the number of steps when the model is built; here it is
    known only when a batch arrives.
    """

    def call(self, inputs):
        context, sequence = inputs
        steps = keras.ops.shape(sequence)[1]
        return keras.ops.repeat(keras.ops.expand_dims(context, 1), steps, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None  # the decoder's mask comes from its tokens

    def compute_output_shape(self, input_shapes):
        context, sequence = input_shapes
        return (context[0], sequence[1], context[-1])


def attend(
    decoded: keras.KerasTensor, memory: keras.KerasTensor, kind: str, units: int
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Luong et al. (2015)'s attentional state tanh(W_c [c_t; h_t]) for each decoder output
    h_t, and the attention's weights [batch, target step, source position].

    c_t averages the memory (encoder outputs; padding masked out) weighted by a score of
    h_t against each position: "dot" is Luong's multiplicative score h_t . W k_s, and
    "additive" is Bahdanau et al. (2015)'s v . tanh(W h_t + U k_s). Attention sits after
    the decoder's recurrence, not inside it (Bahdanau feed c_t into the cell), so that the
    recurrence stays the plain cell under comparison, on its fast path; decoding stays
    causal, since h_t sees only tokens up to t.
    """
    if kind not in ATTENTION_KINDS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KINDS)}; got {kind!r}")
    if memory is None:
        raise ConfigError(f"attention={kind} needs a sequence to attend to; this task has none")
    if kind == "dot":
        query = decoded
        keys = layers.Dense(decoded.shape[-1], use_bias=False, name="attention_keys")(memory)
        score = layers.Attention(name="attention")
    else:
        query = layers.Dense(units, use_bias=False, name="attention_query")(decoded)
        keys = layers.Dense(units, use_bias=False, name="attention_keys")(memory)
        score = layers.AdditiveAttention(name="attention")
    attended, weights = score([query, memory, keys], return_attention_scores=True)
    both = layers.Concatenate(name="attended_and_decoded")([attended, decoded])
    return layers.Dense(units, activation="tanh", name="attentional_state")(both), weights


def decode(
    model: keras.Model,
    inputs: np.ndarray,
    vocabulary: list[str],
    target_length: int,
    chunk_size: int = 256,
    decode_unknown: bool = True,
    beam_size: int = 1,
    length_penalty: float = 0.6,
) -> list[str]:
    """Feed the model its own most likely token, one step at a time, until `[end]`; with
    `beam_size` > 1, keep that many best partial sentences instead (`beam_decode`).

    With `decode_unknown` false, `[UNK]` is never chosen: it can never match a reference
    word, while the most likely real word sometimes does.
    """
    banned = None if decode_unknown or UNKNOWN not in vocabulary else vocabulary.index(UNKNOWN)
    rows = max(1, chunk_size // beam_size)  # the model sees rows × beams at once
    texts = []
    for start in range(0, len(inputs), rows):
        chunk = inputs[start : start + rows]
        if beam_size == 1:
            texts += _greedy_decode_chunk(model, chunk, vocabulary, target_length, banned)
        else:
            texts += beam_decode(
                model, chunk, vocabulary, target_length, banned, beam_size, length_penalty
            )
    return texts


def _greedy_decode_chunk(model, inputs, vocabulary, target_length, banned) -> list[str]:
    start, end = vocabulary.index(START), vocabulary.index(END)
    tokens = np.zeros((len(inputs), target_length), dtype=np.int64)
    tokens[:, 0] = start
    finished = np.zeros(len(inputs), dtype=bool)
    decoded = np.zeros((len(inputs), target_length), dtype=np.int64)
    for step in range(target_length):
        # The decoder is causal, so the tokens so far are all it needs for the next one.
        probabilities = np.array(model.predict_on_batch([inputs, tokens[:, : step + 1]])[:, step])
        if banned is not None:
            probabilities[:, banned] = -1.0
        decoded[:, step] = np.where(finished, 0, probabilities.argmax(axis=-1))
        finished |= decoded[:, step] == end
        if finished.all():
            break
        if step + 1 < target_length:
            tokens[:, step + 1] = decoded[:, step]
    return texts_of(decoded, vocabulary)


def beam_decode(
    model, inputs, vocabulary, target_length, banned, beam_size, length_penalty=0.6
) -> list[str]:
    """Beam search: every step extends each of the `beam_size` best partial sentences of a
    source by every word and keeps the `beam_size` best by total log-probability. A
    sentence that wrote `[end]` stays in its beam, extended by padding at no cost; at the
    end the best by length-penalised score is written out.

    GNMT's length penalty (Wu et al. 2016): a sum of log-probabilities favours short
    sentences, so finished ones are compared by it divided by ((5 + length) / 6) ** α,
    α = `length_penalty` (GNMT's 0.6; larger favours longer sentences)."""
    start, end = vocabulary.index(START), vocabulary.index(END)
    rows, beams = len(inputs), beam_size
    tokens = np.zeros((rows, beams, target_length + 1), dtype=np.int64)
    tokens[:, :, 0] = start
    scores = np.full((rows, beams), -np.inf)
    scores[:, 0] = 0.0  # the beams start identical: one of them is expanded
    lengths = np.zeros((rows, beams))
    finished = np.zeros((rows, beams), dtype=bool)
    sources = np.repeat(inputs, beams, axis=0)
    for step in range(target_length):
        prefixes = tokens[:, :, : step + 1].reshape(rows * beams, step + 1)
        probabilities = np.asarray(model.predict_on_batch([sources, prefixes])[:, step])
        with np.errstate(divide="ignore"):
            words = np.log(probabilities.reshape(rows, beams, -1).astype(np.float64))
        words[:, :, 0] = -np.inf  # padding is not a word
        if banned is not None:
            words[:, :, banned] = -np.inf
        words[finished] = np.where(np.arange(words.shape[-1]) == 0, 0.0, -np.inf)
        candidates = (scores[:, :, None] + words).reshape(rows, -1)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :beams]
        beam, word = np.divmod(best, words.shape[-1])
        scores = np.take_along_axis(candidates, best, axis=1)
        tokens = np.take_along_axis(tokens, beam[:, :, None], axis=1)
        lengths = np.take_along_axis(lengths, beam, axis=1)
        finished = np.take_along_axis(finished, beam, axis=1)
        tokens[:, :, step + 1] = np.where(finished, 0, word)
        lengths += ~finished
        finished |= word == end
        if finished.all():
            break
    penalised = scores / ((5 + lengths) / 6) ** length_penalty
    return texts_of(tokens[np.arange(rows), penalised.argmax(axis=1), 1:], vocabulary)


def texts_of(token_ids: np.ndarray, vocabulary: list[str]) -> list[str]:
    """Each row's words up to its first `[end]`, padding left out."""
    end = vocabulary.index(END)
    return [
        " ".join(vocabulary[i] for i in row[: list(row).index(end) if end in row else None] if i)
        for row in token_ids
    ]


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


def standardized_texts(texts: list[str], standardize: Callable = standardize) -> list[str]:
    if not texts:
        return []  # tf.constant([]) would be a float tensor
    return [text.decode() for text in standardize(tf.constant(texts)).numpy()]


def samples_table(sources: list[str], references: list[str], hypotheses: list[str]) -> str:
    rows = zip(sources, references, hypotheses, strict=True)
    return "".join(f"source:    {s}\nreference: {r}\ndecoded:   {h}\n\n" for s, r, h in rows)
