"""rnnlab's own recurrent cells: the modern ones, next to Keras's SimpleRNN, LSTM and GRU.

- `IndRNNCell` (Li et al. 2018): each unit sees only its own past, h = ReLU(W x + u ⊙ h + b),
  so its gradient through time is a product of scalars the constraint |u| ≤ max keeps tame.
- `MinGRUCell` and `MinLSTMCell` (Feng et al. 2024, "Were RNNs All We Needed?"): gates that
  read only the input, so h_t = a_t ⊙ h_{t-1} + b_t is linear in the state.
- `LRUCell` (Orvieto et al. 2023): a complex diagonal linear recurrence whose eigenvalues
  start in a ring near the unit circle, with a normalised input and a real readout.
- `RGLRUCell` (De et al. 2024, Hawk and Griffin): the real-gated LRU, a decay a^(c·r_t) the
  input gates, with the input scaled by √(1 − a_t²) so the state keeps its size.
- `HGRNCell` (Qin et al. 2023): a forget gate held above a lower bound that rises with the
  layer's depth, so upper layers remember longer; an output gate and a LayerNorm.
- `S6Cell` (Gu & Dao 2023): Mamba's selective state space recurrence, whose step Δ_t and
  maps B_t, C_t read the input, so it chooses per step what to keep.

All but IndRNN are `LinearRecurrentCell`s: besides the usual one-step `call` (which the
gradient probe and a user's subclass use), they give their coefficients a_t, b_t for all
steps at once, and `ProbedRNN` computes the whole sequence with a parallel scan
(rnnlab.recurrence.scan). IndRNN's step is elementwise but not linear: rnnlab's native ops
run its whole sequence too, where they built, and Keras's step loop where not. Each is a
plain Keras cell: `conf/cell/<name>.yaml` names it by `_target_`, and `keras.layers.RNN`
runs it like any other.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import constraints, initializers, layers, ops
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


def positive_candidate(x):
    """g(x) = x + 0.5 for x ≥ 0, else sigmoid(x): the papers' positive, continuous stand-in
    for tanh, which keeps the candidate state > 0 (the papers' scan runs in log space)."""
    return ops.where(x >= 0, x + 0.5, ops.sigmoid(x))


class _InputProjectingCell(DropoutRNNCell, layers.Layer):
    """A cell with one input kernel (inputs → `parts` blocks of `units`), a bias, and
    Keras's input dropout (one mask per sequence, the same at every step)."""

    parts = 1

    def __init__(
        self,
        units: int,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        use_bias: bool = True,
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if units <= 0:
            raise ValueError(f"cell.units must be a positive integer, got {units}")
        self.units = units
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_bias = use_bias
        self.dropout = min(1.0, max(0.0, dropout))
        self.recurrent_dropout = 0.0  # these cells have no recurrent weights to drop
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = units
        self.output_size = units

    def part_sizes(self) -> list[int]:
        """The widths of the projection's blocks: `parts` blocks of `units` here."""
        return [self.units] * self.parts

    def build(self, input_shape) -> None:
        width = sum(self.part_sizes())
        self.kernel = self.add_weight(
            shape=(input_shape[-1], width), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = (
            self.add_weight(shape=(width,), initializer=self.bias_initializer, name="bias")
            if self.use_bias
            else None
        )

    def projection(self, inputs):
        """x W + b, on any leading axes (all steps at once too)."""
        projected = ops.matmul(inputs, self.kernel)
        return projected if self.bias is None else projected + self.bias

    def project(self, inputs, training=False):
        """x W + b after input dropout, split into the cell's blocks (`part_sizes`)."""
        if training and self.dropout:
            inputs = inputs * self.get_dropout_mask(inputs)
        projected = self.projection(inputs)
        sizes = self.part_sizes()
        if len(sizes) == 1:
            return [projected]
        return ops.split(projected, np.cumsum(sizes)[:-1].tolist(), axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "seed": self.seed,
        }


# IndRNN's activations that rnnlab's native ops compute (native/scans.cc), and their ops' names.
INDRNN_NATIVE_ACTIVATIONS = {
    keras.activations.relu: "ind_rnn_relu_scan",
    keras.activations.tanh: "ind_rnn_tanh_scan",
}


@keras.saving.register_keras_serializable(package="rnnlab")
class IndRNNCell(_InputProjectingCell):
    """h_t = activation(W x_t + u ⊙ h_{t-1} + b) (Li et al. 2018), |u| ≤ `recurrent_max_abs`.

    The recurrence is elementwise but not linear (ReLU), so no associative scan computes it;
    with ReLU or tanh, rnnlab's native ops run the whole sequence in one op each way
    (`native_scan`, read by rnnlab.recurrence.scan), else, or without them, Keras's step
    loop does. The bound stays a weight constraint, which Keras applies after each update
    whichever route computed the gradient. A subclass that changes `call` sets
    `native_scan = None`, so its own step is what runs.
    """

    def __init__(
        self,
        units: int,
        activation="relu",
        recurrent_initializer=None,
        recurrent_max_abs: float | None = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(units, **kwargs)
        self.activation = keras.activations.get(activation)
        # u uniform in [0, 1]: every unit starts between forgetting at once and holding on.
        self.recurrent_initializer = initializers.get(
            recurrent_initializer or initializers.RandomUniform(minval=0.0, maxval=1.0)
        )
        self.recurrent_max_abs = recurrent_max_abs

    def build(self, input_shape) -> None:
        super().build(input_shape)
        bound = self.recurrent_max_abs
        self.recurrent_weight = self.add_weight(
            shape=(self.units,),
            initializer=self.recurrent_initializer,
            constraint=None if bound is None else BoundedAbs(bound),
            name="recurrent_weight",
        )

    @property
    def native_scan(self) -> str | None:
        """The name of its native ops for this activation, or None: no op computes it."""
        return INDRNN_NATIVE_ACTIVATIONS.get(self.activation)

    def scan_parameters(self):
        """u, the one parameter per lane the native op reads."""
        return self.recurrent_weight

    def readout(self, states, inputs):
        """The output is the state, as in `call`."""
        return states

    def call(self, inputs, states, training=False):
        (projected,) = self.project(inputs, training)
        state = self.activation(projected + self.recurrent_weight * states[0])
        return state, [state]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "activation": keras.activations.serialize(self.activation),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "recurrent_max_abs": self.recurrent_max_abs,
        }


@keras.saving.register_keras_serializable(package="rnnlab")
class BoundedAbs(constraints.Constraint):
    """Clips each weight to [-bound, bound] after every update, as IndRNN's paper does."""

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def __call__(self, weights):
        return ops.clip(weights, -self.bound, self.bound)

    def get_config(self) -> dict:
        return {"bound": self.bound}


class LinearRecurrentCell(_InputProjectingCell):
    """A cell whose state follows h_t = a_t ⊙ h_{t-1} + b_t, with a_t and b_t from x_t alone.

    Subclasses give `coefficients(projected)`; `ProbedRNN` then computes a whole sequence
    with `rnnlab.recurrence.scan` instead of step by step. A subclass that changes `call` should
    pass `parallel_scan=False`, so its own step is what runs.
    """

    native_scan: str | None = None  # the name of its ops in rnnlab.native, if it has some

    def __init__(self, units: int, parallel_scan: bool = True, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.parallel_scan = parallel_scan

    def scan_parameters(self):
        """What the native op needs besides the projected inputs (nothing here)."""
        return ops.zeros((0,))

    def coefficients(self, parts):
        """(a, b) from the projected inputs; any leading axes."""
        raise NotImplementedError

    def readout(self, states, inputs):
        """The cell's output from its new state (and input): the state itself here."""
        return states

    def build_output_gate(self, input_shape) -> None:
        """W_g and b_g of a gate on the output that reads x_t (HGRN's, Griffin's branch).

        A state read out as it is cannot answer a question asked by the current input (which
        value did this key get?); multiplied by a function of x_t, each unit speaks only
        when the input asks for it. Call from `build`; `output_gate_input` applies it.
        """
        self.gate_kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            name="gate_kernel",
        )
        self.gate_bias = (
            self.add_weight(
                shape=(self.units,), initializer=self.bias_initializer, name="gate_bias"
            )
            if self.use_bias
            else None
        )

    def output_gate_input(self, inputs):
        """W_g x_t + b_g, before the cell's own nonlinearity."""
        gate = ops.matmul(inputs, self.gate_kernel)
        return gate if self.gate_bias is None else gate + self.gate_bias

    def call(self, inputs, states, training=False):
        a, b = self.coefficients(self.project(inputs, training))
        state = a * states[0] + b
        return self.readout(state, inputs), [state]

    def get_config(self) -> dict:
        return {**super().get_config(), "parallel_scan": self.parallel_scan}


# The largest gradient √x passes back (at x near 0, where √'s is infinite): the RG-LRU's
# authors' bound (recurrentgemma's `sqrt_bound_derivative`), which the native op uses too.
MAX_SQRT_GRADIENT = 1000.0


@ops.custom_gradient
def bounded_sqrt(x):
    """√x, whose gradient 1/(2√x) is capped at MAX_SQRT_GRADIENT: a gate that saturates
    (a_t → 1, 1 − a_t² → 0) must not send an infinite gradient to the gates."""
    root = ops.sqrt(x)

    def gradient(*args, upstream=None):
        upstream = args[0] if args else upstream  # TensorFlow passes it by position
        return upstream / (2 * ops.maximum(root, 1 / (2 * MAX_SQRT_GRADIENT)))

    return root, gradient


@keras.saving.register_keras_serializable(package="rnnlab")
class MinGRUCell(LinearRecurrentCell):
    """minGRU: z = σ(W_z x), h̃ = g(W_h x), h_t = (1 - z) ⊙ h_{t-1} + z ⊙ h̃ (Feng et al. 2024)."""

    parts = 2
    native_scan = "min_gru_scan"

    def coefficients(self, parts):
        gate, candidate = parts
        update = ops.sigmoid(gate)
        return 1.0 - update, update * positive_candidate(candidate)


@keras.saving.register_keras_serializable(package="rnnlab")
class MinLSTMCell(LinearRecurrentCell):
    """minLSTM (Feng et al. 2024): f = σ(W_f x), i = σ(W_i x), h̃ = g(W_h x), and the gates
    normalised so they sum to one: h_t = f/(f+i) ⊙ h_{t-1} + i/(f+i) ⊙ h̃."""

    parts = 3
    native_scan = "min_lstm_scan"

    def coefficients(self, parts):
        forget, remember, candidate = parts
        forget, remember = ops.sigmoid(forget), ops.sigmoid(remember)
        total = forget + remember
        return forget / total, remember / total * positive_candidate(candidate)


@keras.saving.register_keras_serializable(package="rnnlab")
class LRUCell(LinearRecurrentCell):
    """The Linear Recurrent Unit (Orvieto et al. 2023), on a complex state of `state_units`.

    x_t = Λ ⊙ x_{t-1} + γ ⊙ (B u_t),  y_t = activation(Re(C x_t) + D u_t), with
    Λ = exp(-exp(ν) + i·exp(θ)) and γ = sqrt(1 - |Λ|²) (the paper's normalisation, kept as a
    trainable log). At initialisation |Λ| is uniform on the ring [r_min, r_max] (r² uniform)
    and its phase uniform in [0, max_phase]. D is the paper's diagonal skip when inputs and
    units have one size, else a full matrix. The paper puts an MLP after the LRU; `activation`
    (GELU by default) stands in for it, so that stacked LRU layers are not one linear map.

    Keras states are real, so the state is [Re x, Im x] side by side (2·state_units); its
    norm is the complex state's, which is what the gradient probe reads.
    """

    def __init__(
        self,
        units: int,
        state_units: int | None = None,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        activation="gelu",
        **kwargs,
    ) -> None:
        super().__init__(units, **kwargs)
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"need 0 ≤ r_min < r_max ≤ 1, got r_min={r_min}, r_max={r_max}")
        self.state_units = state_units or units
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.activation = keras.activations.get(activation)
        self.state_size = 2 * self.state_units

    def build(self, input_shape) -> None:
        inputs, states = input_shape[-1], self.state_units
        # The paper's initialisation: |λ|² uniform between r_min² and r_max², phase uniform.
        # Drawn through Keras, so `keras.utils.set_random_seed` (and `seed`) fix them.
        draws = ops.convert_to_numpy(
            keras.random.uniform((2, states), seed=self.seed_generator)
        ).astype(np.float64)
        radius_squared = draws[0] * (self.r_max**2 - self.r_min**2) + self.r_min**2
        nu = -0.5 * np.log(radius_squared)
        theta = draws[1] * self.max_phase
        magnitude = np.exp(-nu)
        self.nu_log = self._constant_weight("nu_log", np.log(nu))
        self.theta_log = self._constant_weight("theta_log", np.log(np.maximum(theta, 1e-12)))
        self.gamma_log = self._constant_weight("gamma_log", np.log(np.sqrt(1 - magnitude**2)))
        input_scale = initializers.RandomNormal(
            stddev=1 / math.sqrt(2 * inputs), seed=self._seed(1)
        )
        self.kernel = self.add_weight(  # [Re B | Im B], applied as u B
            shape=(inputs, 2 * states), initializer=input_scale, name="kernel"
        )
        self.bias = None
        readout_scale = initializers.RandomNormal(stddev=1 / math.sqrt(states), seed=self._seed(2))
        self.readout_kernel = self.add_weight(  # [Re C ; Im C], applied as [Re x, -Im x] C
            shape=(2 * states, self.units), initializer=readout_scale, name="readout_kernel"
        )
        skip_shape = (self.units,) if inputs == self.units else (inputs, self.units)
        skip_scale = 1.0 if inputs == self.units else 1 / math.sqrt(inputs)
        self.skip = self.add_weight(
            shape=skip_shape,
            initializer=initializers.RandomNormal(stddev=skip_scale, seed=self._seed(3)),
            name="skip",
        )

    def _seed(self, offset: int) -> int | None:
        """Distinct seeds for B, C and D when the cell has one: else they would be equal."""
        return None if self.seed is None else self.seed + offset

    def _constant_weight(self, name: str, values: np.ndarray):
        return self.add_weight(
            shape=values.shape, initializer=initializers.Constant(values), name=name
        )

    def eigenvalues(self):
        """(Re Λ, Im Λ), one per state unit."""
        magnitude = ops.exp(-ops.exp(self.nu_log))
        phase = ops.exp(self.theta_log)
        return magnitude * ops.cos(phase), magnitude * ops.sin(phase)

    native_scan = "lru_scan"

    def scan_parameters(self):
        """[Re Λ | Im Λ | γ], as the native op reads them."""
        return ops.concatenate([*self.eigenvalues(), ops.exp(self.gamma_log)], axis=0)

    def coefficients(self, parts):
        """(Λ, γ ⊙ B u) as pairs (real, imaginary); Λ is the same at every step."""
        (projected,) = parts
        real, imaginary = ops.split(projected, 2, axis=-1)
        gamma = ops.exp(self.gamma_log)
        return self.eigenvalues(), (real * gamma, imaginary * gamma)

    def readout(self, states, inputs):
        real, imaginary = ops.split(states, 2, axis=-1)
        # Re(C x) = Re C · Re x - Im C · Im x
        flipped = ops.concatenate([real, -imaginary], axis=-1)
        diagonal = len(self.skip.shape) == 1  # the paper's D, inputs and outputs of one size
        skipped = inputs * self.skip if diagonal else ops.matmul(inputs, self.skip)
        return self.activation(ops.matmul(flipped, self.readout_kernel) + skipped)

    def call(self, inputs, states, training=False):
        (lambda_real, lambda_imaginary), (b_real, b_imaginary) = self.coefficients(
            self.project(inputs, training)
        )
        real, imaginary = ops.split(states[0], 2, axis=-1)
        state = ops.concatenate(
            [
                lambda_real * real - lambda_imaginary * imaginary + b_real,
                lambda_real * imaginary + lambda_imaginary * real + b_imaginary,
            ],
            axis=-1,
        )
        return self.readout(state, inputs), [state]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "state_units": self.state_units,
            "r_min": self.r_min,
            "r_max": self.r_max,
            "max_phase": self.max_phase,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="rnnlab")
class RGLRUCell(LinearRecurrentCell):
    """The Real-Gated Linear Recurrent Unit of Hawk and Griffin (De et al. 2024):

    r_t = σ(W_a x_t + b_a), i_t = σ(W_x x_t + b_x), a_t = a^(c·r_t) with a = σ(Λ),
    h_t = a_t ⊙ h_{t-1} + √(1 − a_t²) ⊙ (i_t ⊙ W x_t).

    The recurrence gate r_t only ever shortens the memory (a_t ≥ a), and √(1 − a_t²) keeps
    the state's size when a_t is near 1. log a_t = −c·softplus(−Λ)·r_t is computed in that
    form, never as a power. The paper's initialisation: a^c uniform in [a_min, a_max].
    The paper's x_t is already a projection (after a short convolution in Griffin's block),
    and its gate matrices are block-diagonal by heads; here W, W_a and W_x are full, one
    kernel of three blocks.

    `output_gate` adds Griffin's other branch, y_t = GeLU(W_g x_t + b_g) ⊙ h_t: Hawk's cell
    alone outputs h_t, which no query reads, so it cannot recall a key's value. Here
    the gate reads the cell's input (after `model.short_conv`), Griffin's the block's.
    """

    parts = 3
    native_scan = "rg_lru_scan"

    def __init__(
        self,
        units: int,
        a_min: float = 0.9,
        a_max: float = 0.999,
        gate_power: float = 8.0,
        output_gate: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(units, **kwargs)
        self.output_gate = output_gate
        if not 0.0 < a_min < a_max < 1.0:
            raise ValueError(f"need 0 < a_min < a_max < 1, got a_min={a_min}, a_max={a_max}")
        if gate_power <= 0:
            raise ValueError(f"cell.gate_power must be positive, got {gate_power}")
        self.a_min, self.a_max, self.gate_power = a_min, a_max, gate_power

    def build(self, input_shape) -> None:
        super().build(input_shape)
        # a^c uniform in [a_min, a_max], so a = (a^c)^(1/c) and Λ = logit(a). Drawn through
        # Keras, so `keras.utils.set_random_seed` (and `seed`) fix them.
        draws = ops.convert_to_numpy(
            keras.random.uniform((self.units,), seed=self.seed_generator)
        ).astype(np.float64)
        a = (self.a_min + draws * (self.a_max - self.a_min)) ** (1 / self.gate_power)
        self.a_logit = self.add_weight(
            shape=(self.units,),
            initializer=initializers.Constant(np.log(a) - np.log1p(-a)),
            name="a_logit",
        )
        if self.output_gate:
            self.build_output_gate(input_shape)

    def decay_rates(self):
        """c·softplus(−Λ) = −c·log a: log a_t = −r_t times this (what the native op reads)."""
        return self.gate_power * ops.softplus(-self.a_logit)

    def scan_parameters(self):
        return self.decay_rates()

    def coefficients(self, parts):
        recurrence_gate, input_gate, value = parts
        log_a = -ops.sigmoid(recurrence_gate) * self.decay_rates()
        # 1 − a_t² by expm1: a_t near 1 loses 1 − a_t² to rounding in a plain subtraction.
        normaliser = bounded_sqrt(-ops.expm1(2 * log_a))
        return ops.exp(log_a), normaliser * ops.sigmoid(input_gate) * value

    def readout(self, states, inputs):
        if not self.output_gate:
            return states
        return ops.gelu(self.output_gate_input(inputs), approximate=False) * states

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "a_min": self.a_min,
            "a_max": self.a_max,
            "gate_power": self.gate_power,
            "output_gate": self.output_gate,
        }


@keras.saving.register_keras_serializable(package="rnnlab")
class HGRNCell(LinearRecurrentCell):
    """HGRN's recurrent unit (Qin et al. 2023), in its real-valued form:

    f_t = γ + (1 − γ)·σ(W_f x_t + b_f), i_t = SiLU(W_i x_t + b_i),
    h_t = f_t ⊙ h_{t-1} + (1 − f_t) ⊙ i_t,
    y_t = LayerNorm(SiLU(W_g x_t + b_g) ⊙ h_t)   (`output_gate`; else y_t = h_t).

    γ, the forget gate's lower bound, rises with depth: the paper learns Γ (layers × units)
    and gives layer k the cumulative softmax Σ_{j<k} softmax(Γ)_j, 0 for the first layer.
    A Keras cell cannot share a weight with the other layers' cells, so γ is fixed here at
    that sum's starting value, k/L for layer k of L (Γ = 0): `forget_lower_bound: null`
    lets the stack set it (`place_in_stack`); a number fixes it for every layer.
    The paper's state is complex (a phase θ and a complex input); flash-linear-attention's
    HGRN, which its authors maintain, is real, and so is this one. The paper's output
    projection W_o is left to the next layer's kernel (or the head), which absorbs it.
    """

    parts = 2
    native_scan = "hgrn_scan"

    def __init__(
        self,
        units: int,
        forget_lower_bound: float | None = None,
        output_gate: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(units, **kwargs)
        if forget_lower_bound is not None and not 0.0 <= forget_lower_bound < 1.0:
            raise ValueError(
                f"cell.forget_lower_bound must be null or in [0, 1), got {forget_lower_bound}"
            )
        self.forget_lower_bound = forget_lower_bound
        self.output_gate = output_gate

    def place_in_stack(self, index: int, layers: int) -> None:
        """Layer `index` (from 0) of `layers`: the paper's starting bound index/layers,
        unless the config fixed one."""
        if self.forget_lower_bound is None:
            self.forget_lower_bound = index / layers

    @property
    def lower_bound(self) -> float:
        return self.forget_lower_bound or 0.0

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if self.output_gate:
            self.build_output_gate(input_shape)

    def scan_parameters(self):
        """γ for every lane, as the native op reads it."""
        return ops.full((self.units,), self.lower_bound, dtype=self.compute_dtype)

    def coefficients(self, parts):
        forget, candidate = parts
        bound = self.lower_bound
        forget = bound + (1 - bound) * ops.sigmoid(forget)
        return forget, (1 - forget) * ops.silu(candidate)

    def readout(self, states, inputs):
        if not self.output_gate:
            return states
        gated = ops.silu(self.output_gate_input(inputs)) * states
        mean = ops.mean(gated, axis=-1, keepdims=True)
        variance = ops.var(gated, axis=-1, keepdims=True)
        # No scale and offset: the next layer's kernel (or the head) is linear and absorbs them.
        return (gated - mean) * ops.rsqrt(variance + 1e-5)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "forget_lower_bound": self.forget_lower_bound,
            "output_gate": self.output_gate,
        }


@keras.saving.register_keras_serializable(package="rnnlab")
class S6Cell(LinearRecurrentCell):
    """S6, the selective state space recurrence of Mamba (Gu & Dao 2023), on its own:

    for channel d of `units` and state n of `state_units` (the paper's D and N),
    Δ_t = softplus(W_Δ x_t + b_Δ), B_t = W_B x_t, C_t = W_C x_t, v_t = W_v x_t + b_v,
    h_t[d, n] = exp(Δ_t[d] A[d, n]) h_{t-1}[d, n] + Δ_t[d] B_t[n] v_t[d],
    y_t[d] = Σ_n C_t[n] h_t[d, n] + D[d] v_t[d].

    Δ_t, B_t and C_t read the input (the "selection"), so the cell can choose per step what
    to keep and what to ignore, which the LRU's fixed decay cannot; the recurrence stays
    linear in h, so it scans in parallel. The paper's initialisation: A = −exp(A_log) starts
    at S4D-real's −(n + 1), Δ's bias so that Δ starts log-uniform in [dt_min, dt_max], D at 1.
    Where it departs from the paper: Mamba's block around S6 (the expanding in-projection,
    short causal convolution, SiLU, the gate z and the out-projection) is left out, so v_t
    is a linear projection of the input and the next layer's kernel (or the head) projects
    out; W_Δ is full rather than low-rank (dt_rank); B_t and C_t have biases too (zero at
    start). A is discretised by zero-order hold and B as Δ B, as Mamba's own code does.
    The state is units × state_units numbers. rnnlab's native op (`native_scan`, its own
    call `native_calls.native_selective_scan`) runs the recurrence and C's readout in one
    loop, so no step's state reaches memory; TensorFlow's associative scan, where the ops
    did not build, holds [B, T, units·state_units], and trained slower than the step loop.
    """

    native_scan = "selective_scan"

    def __init__(
        self,
        units: int,
        state_units: int = 16,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(units, **kwargs)
        if state_units <= 0:
            raise ValueError(f"cell.state_units must be a positive integer, got {state_units}")
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min ≤ dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.state_units, self.dt_min, self.dt_max = state_units, dt_min, dt_max
        self.state_size = units * state_units

    def part_sizes(self) -> list[int]:
        """[v | Δ | B | C]: units, units, state_units, state_units."""
        return [self.units, self.units, self.state_units, self.state_units]

    def build(self, input_shape) -> None:
        super().build(input_shape)
        units, states = self.units, self.state_units
        self.a_log = self.add_weight(  # S4D-real: A[d, n] = −(n + 1)
            shape=(units, states),
            initializer=initializers.Constant(
                np.log(np.tile(np.arange(1.0, states + 1), (units, 1)))
            ),
            name="a_log",
        )
        self.skip = self.add_weight(shape=(units,), initializer="ones", name="skip")
        if self.bias is None:
            return
        # Δ's bias: softplus⁻¹ of Δ drawn log-uniform in [dt_min, dt_max]. Drawn through
        # Keras, so `keras.utils.set_random_seed` (and `seed`) fix it.
        draws = ops.convert_to_numpy(
            keras.random.uniform((units,), seed=self.seed_generator)
        ).astype(np.float64)
        step = np.exp(np.log(self.dt_min) + draws * (np.log(self.dt_max) - np.log(self.dt_min)))
        bias = ops.convert_to_numpy(self.bias).astype(np.float64)
        bias[units : 2 * units] = step + np.log(-np.expm1(-step))
        self.bias.assign(bias.astype(self.bias.dtype))

    def _grid(self, flat):
        """[..., units·state_units] as [..., units, state_units]."""
        shape = ops.shape(flat)
        return ops.reshape(flat, (*shape[:-1], self.units, self.state_units))

    def _flat(self, grid):
        shape = ops.shape(grid)
        return ops.reshape(grid, (*shape[:-2], self.units * self.state_units))

    def state_matrix(self):
        """A = −exp(A_log), [units, state_units]: negative, so every decay is below 1."""
        return -ops.exp(self.a_log)

    def coefficients(self, parts):
        value, step, b, _ = parts
        step = ops.softplus(step)
        a = ops.exp(step[..., :, None] * self.state_matrix())
        return self._flat(a), self._flat((step * value)[..., :, None] * b[..., None, :])

    def readout(self, states, inputs):
        value, _, _, c = self.project(inputs)
        return ops.sum(self._grid(states) * c[..., None, :], axis=-1) + self.skip * value

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "state_units": self.state_units,
            "dt_min": self.dt_min,
            "dt_max": self.dt_max,
        }
