"""The two masks every route of a recurrent layer applies alike: input dropout and padding.

Keras's step loop draws a cell's input-dropout mask once per sequence and applies the same
mask at every step, and hands a layer's padding mask over as a list when the layer was
called with several inputs. The routes that replace the loop for a whole sequence at once
(`fused`, `scan`, and cuDNN in `layer`) must do both exactly as it does, or they would
train a different model: they do it here, once.
"""

from __future__ import annotations

import tensorflow as tf


def input_dropout(cell, sequences, training):
    """`sequences` [B, T, features] times the cell's own dropout mask, the same at every
    step, while training with dropout; else as they are."""
    if not (training and cell.dropout):
        return sequences
    return sequences * tf.expand_dims(cell.get_dropout_mask(sequences[:, 0, :]), 1)


def padding_mask(mask):
    """The [B, T] mask Keras passed to the layer's loop (the first, where it passed a list),
    or None."""
    return mask[0] if isinstance(mask, list | tuple) else mask
