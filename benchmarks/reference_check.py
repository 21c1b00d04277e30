"""rnnlab's modern cells against their authors' reference code, on the same weights and inputs.

Each cell is built from its `conf/cell/*.yaml` (small widths), wrapped in `ProbedRNN` as a
run wraps it, given random weights away from their initialisation (so no gate is saturated
or zero), and run on random inputs; the same weights go into the authors' pure-PyTorch code
for the same recurrence, and the table shows the largest difference in the outputs and the
final state. A difference beyond the stated tolerance makes the script exit 1.

- S6 (`S6Cell`) against `selective_scan_ref` of Mamba's `mamba_ssm`, which needs CUDA to
  install: the script fetches its source once with `pip download` into
  ~/.cache/rnnlab/reference, checks its hash, parses `ops/selective_scan_interface.py` and
  executes only that function and its torch/einops imports. rnnlab's Δ's pre-activation,
  v, B_t, C_t come from the cell's kernel and bias; u = v, delta_bias = Δ's bias with
  delta_softplus, A = −exp(A_log), D = the skip. The reference computes in float32 whatever
  it is given, so its tolerance is float32's; rnnlab runs in float64. Both of rnnlab's
  routes: the parallel scan and the step loop (`cell.parallel_scan=false`).
- mLSTM (`MLSTMCell`) against the `xlstm` package's (`pip install -e ".[bench]"`)
  `recurrent_step_stabilized_simple`, stepped over the sequence, which has rnnlab's
  conventions exactly (k scaled by 1/√d inside, m_0 = 0, the denominator
  max(|nᵀq|, exp(−m))): outputs and the final C, n, m; `parallel_stabilized_simple`, the
  T × T form (outputs only: it keeps no state); and `chunkwise_simple`, the authors'
  chunked form, which scales q rather than k by 1/√d, so its C and n are √d times rnnlab's
  (compared after dividing). Their `eps` (1e-6 added to the denominator) is set to 0, which
  rnnlab has not; their h̃ has no output gate, so σ(õ) from the same weights multiplies it.
  Both of rnnlab's routes: its step loop (`cell.parallel_chunks=false`) and its chunks, at a
  length that is not a whole number of chunks (rnnlab pads the last) and, for
  `chunkwise_simple`, which needs whole chunks, at one that is.
- sLSTM (`SLSTMCell`) against `xlstm`'s vanilla backend, `slstm_forward` with its `slstm`
  pointwise function: gates W x_t + R h_{t−1} + b in rnnlab's order [i | f | z | o], R
  block-diagonal by heads (the reference's R is rnnlab's `recurrent_kernel` transposed per
  head). The reference starts its stabiliser at m_1 = ĩ_1 where rnnlab takes
  max(ĩ_1, log σ(f̃_1) + m_0): c, n and m can then be stored on different scales (their
  ratio and every output agree), so the final state compared is h, c/n and m + log n.

    make bench   # or: .venv/bin/python benchmarks/reference_check.py
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import configure_threads  # noqa: E402

configure_threads()  # as `rnnlab train` does, before TensorFlow starts

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.recurrence.layer import ProbedRNN  # noqa: E402
from rnnlab.recurrence.stack import build_cell  # noqa: E402
from rnnlab.recurrence.xlstm import powerlaw_forget_bias  # noqa: E402

# Mamba's source distribution: the version the issue names, and its sha256 on PyPI.
MAMBA_VERSION = "2.3.2.post1"
MAMBA_SHA256 = "104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028"
MAMBA_SOURCE = "mamba_ssm/ops/selective_scan_interface.py"
REFERENCE_CACHE = Path.home() / ".cache" / "rnnlab" / "reference"
XLSTM_VERSION = "2.0.6"

# Largest |rnnlab − reference| accepted: rounding in float64 (T ≤ 70 steps of values near 1),
# and float32's for Mamba's reference, which computes in float32 whatever it is given.
FLOAT64_TOLERANCE = 1e-10
FLOAT32_TOLERANCE = 1e-4

BATCH, FEATURES = 2, 3


@dataclass
class Row:
    """One line of the table: a route of one rnnlab cell against one reference function."""

    cell: str
    reference: str
    outputs: float
    state: float | None  # None where the reference keeps no state
    tolerance: float

    @property
    def matches(self) -> bool:
        return max(self.outputs, self.state or 0.0) <= self.tolerance


def mamba_archive() -> Path:
    """mamba-ssm's sdist in the cache, fetched with pip the first time."""
    archive = REFERENCE_CACHE / f"mamba_ssm-{MAMBA_VERSION}.tar.gz"
    if not archive.exists():
        print(f"fetching mamba-ssm {MAMBA_VERSION}'s source with pip into {REFERENCE_CACHE} (once)")
        # Its build script imports torch and would compile CUDA kernels: the venv's torch,
        # and no kernels, are enough for pip to read its metadata.
        command = [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--no-binary", ":all:", "--no-build-isolation", "--dest", str(REFERENCE_CACHE)),
            f"mamba-ssm=={MAMBA_VERSION}",
        ]
        environment = {**os.environ, "MAMBA_SKIP_CUDA_BUILD": "TRUE"}
        if subprocess.run(command, env=environment).returncode or not archive.exists():
            sys.exit(f"pip could not download mamba-ssm {MAMBA_VERSION}'s source (see above)")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != MAMBA_SHA256:
        sys.exit(f"{archive} has sha256 {digest}, not PyPI's {MAMBA_SHA256}: delete it")
    return archive


def selective_scan_ref():
    """Mamba's `selective_scan_ref`, executed from its source alone: the rest of the module
    imports its CUDA extension and Triton kernels."""
    archive = mamba_archive()
    with tarfile.open(archive) as sdist:
        member = sdist.extractfile(f"mamba_ssm-{MAMBA_VERSION}/{MAMBA_SOURCE}")
        if member is None:
            sys.exit(f"{archive} has no {MAMBA_SOURCE}")
        source = member.read().decode()

    def needed(node: ast.stmt) -> bool:
        if isinstance(node, ast.FunctionDef):
            return node.name == "selective_scan_ref"
        if isinstance(node, ast.Import):
            return all(alias.name.split(".")[0] in {"torch", "einops"} for alias in node.names)
        if isinstance(node, ast.ImportFrom):
            return (node.module or "").split(".")[0] in {"torch", "einops"}
        return False

    module = ast.Module(
        body=[node for node in ast.parse(source).body if needed(node)], type_ignores=[]
    )
    namespace: dict = {}
    exec(compile(module, f"{archive.name}/{MAMBA_SOURCE}", "exec"), namespace)
    return namespace["selective_scan_ref"]


def built_cell(name: str, overrides: list[str], steps: int):
    """rnnlab's cell from `conf/cell/<name>.yaml` with `overrides`, built for float64 inputs."""
    cfg = compose_config([f"cell={name}", *overrides])
    cell = build_cell(cfg.cell)
    cell.build((BATCH, steps, FEATURES))
    return cell


def run_rnnlab(cell, weights: dict[str, np.ndarray], inputs: np.ndarray):
    """The cell's outputs [B, T, units], final states and route, with `weights` assigned."""
    for name, value in weights.items():
        getattr(cell, name).assign(value)
    layer = ProbedRNN(cell, return_sequences=True, return_state=True)
    outputs, *states = layer(inputs)
    route = layer.recurrence_routes.get(False, ("keras",))[0]
    return np.asarray(outputs), [np.asarray(state) for state in states], route


def largest_difference(ours, theirs) -> float:
    """max |ours − theirs|, the reference's float32 widened first."""
    return float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs, dtype=np.float64))))


def s6_rows(rng: np.random.Generator, steps: int = 64) -> list[Row]:
    """S6's parallel scan and step loop against `selective_scan_ref`."""
    units, state_units = 8, 16
    overrides = [f"cell.units={units}", f"cell.state_units={state_units}"]
    width = 2 * units + 2 * state_units  # [v | Δ | B | C]
    # Δ's bias from softplus⁻¹ of steps in [0.05, 0.5]: larger than the default's, so every
    # state both decays and takes in input within the sequence.
    step = np.exp(rng.uniform(np.log(0.05), np.log(0.5), units))
    bias = rng.normal(0.0, 0.3, width)
    bias[units : 2 * units] = step + np.log(-np.expm1(-step))
    weights = {
        "kernel": rng.normal(0.0, 0.5, (FEATURES, width)),
        "bias": bias,
        "a_log": np.log(np.tile(np.arange(1.0, state_units + 1), (units, 1)))
        + rng.normal(0.0, 0.2, (units, state_units)),
        "skip": rng.normal(1.0, 0.3, units),
    }
    inputs = rng.normal(size=(BATCH, steps, FEATURES))

    projected = inputs @ weights["kernel"]
    value, delta, b, c = np.split(projected, np.cumsum([units, units, state_units]), -1)
    value = value + weights["bias"][:units]
    b = b + weights["bias"][2 * units : 2 * units + state_units]
    c = c + weights["bias"][2 * units + state_units :]

    def channels_first(x):  # [B, T, n] → [B, n, T], the reference's layout
        return torch.tensor(np.ascontiguousarray(x.transpose(0, 2, 1)), dtype=torch.float32)

    reference, last_state = selective_scan_ref()(
        channels_first(value),
        channels_first(delta),
        torch.tensor(-np.exp(weights["a_log"]), dtype=torch.float32),
        channels_first(b),
        channels_first(c),
        D=torch.tensor(weights["skip"], dtype=torch.float32),
        delta_bias=torch.tensor(weights["bias"][units : 2 * units], dtype=torch.float32),
        delta_softplus=True,
        return_last_state=True,
    )
    reference = reference.numpy().transpose(0, 2, 1)
    name = f"mamba-ssm {MAMBA_VERSION} selective_scan_ref (fp32)"
    rows = []
    for parallel in (True, False):
        cell = built_cell("s6", [*overrides, f"cell.parallel_scan={parallel}"], steps)
        outputs, (state,), route = run_rnnlab(cell, weights, inputs)
        state = state.reshape(BATCH, units, state_units)
        rows.append(
            Row(
                f"s6 ({route})",
                name,
                largest_difference(outputs, reference),
                largest_difference(state, last_state.numpy()),
                FLOAT32_TOLERANCE,
            )
        )
    return rows


def mlstm_weights(rng: np.random.Generator, units: int, heads: int) -> dict[str, np.ndarray]:
    # Input gates spread over e^±2 and read the input, forget gates the reference's 3 to 6
    # but moved by the input, so the stabiliser switches between its two branches.
    gate_bias = np.concatenate([rng.normal(0.0, 1.0, heads), np.linspace(3.0, 6.0, heads)])
    return {
        "kernel": rng.normal(0.0, 0.5, (FEATURES, 4 * units)),
        "bias": rng.normal(0.0, 0.2, 4 * units),
        "gate_kernel": rng.normal(0.0, 1.0, (FEATURES, 2 * heads)),
        "gate_bias": gate_bias + rng.normal(0.0, 0.5, 2 * heads),
    }


def mlstm_reference_inputs(weights, inputs, heads: int):
    """q, k (unscaled: the reference scales it), v [B, NH, T, d], ĩ, f̃ [B, NH, T] and the
    output gate σ(õ) [B, T, units], from rnnlab's weights."""
    batch, steps, _ = inputs.shape
    query, key, value, output_gate = np.split(inputs @ weights["kernel"] + weights["bias"], 4, -1)
    input_gate, forget_gate = np.split(
        inputs @ weights["gate_kernel"] + weights["gate_bias"], 2, -1
    )

    def by_head(x):
        return torch.tensor(x.reshape(batch, steps, heads, -1).transpose(0, 2, 1, 3))

    gates = (torch.tensor(g.transpose(0, 2, 1)) for g in (input_gate, forget_gate))
    return (
        by_head(query),
        by_head(key),
        by_head(value),
        *gates,
        1.0 / (1.0 + np.exp(-output_gate)),
    )


def mlstm_rows(rng: np.random.Generator, steps: int = 50, chunk_size: int = 16) -> list[Row]:
    """The mLSTM's step loop and chunks (L = 16, so T = 50 pads the last chunk) against the
    authors' step, T × T and chunked forms."""
    from xlstm.blocks.mlstm.backends import (
        chunkwise_simple,
        parallel_stabilized_simple,
        recurrent_step_stabilized_simple,
    )

    units, heads = 16, 4
    width = units // heads
    overrides = [f"cell.units={units}", f"cell.heads={heads}", f"cell.chunk_size={chunk_size}"]
    weights = mlstm_weights(rng, units, heads)
    rows = []

    def compare(route_overrides, inputs, reference, state, reference_name):
        cell = built_cell("mlstm", [*overrides, *route_overrides], inputs.shape[1])
        outputs, (memory, normaliser, stabiliser), route = run_rnnlab(cell, weights, inputs)
        memory = memory.reshape(BATCH, heads, width, width).transpose(0, 1, 3, 2)  # k by v
        normaliser = normaliser.reshape(BATCH, heads, width)
        state_difference = state and max(
            largest_difference(ours, theirs)
            for ours, theirs in zip((memory, normaliser, stabiliser), state)
        )
        route = f"{route}, L = {chunk_size}" if route == "chunkwise" else route
        rows.append(
            Row(
                f"mlstm ({route}, T = {inputs.shape[1]})",
                f"xlstm {XLSTM_VERSION} {reference_name}",
                largest_difference(outputs, reference),
                state_difference,
                FLOAT64_TOLERANCE,
            )
        )

    # The step form, stepped over the sequence; its state starts at zero as Keras's does.
    inputs = rng.normal(size=(BATCH, steps, FEATURES))
    q, k, v, i, f, output_gate = mlstm_reference_inputs(weights, inputs, heads)
    c_state = torch.zeros(BATCH, heads, width, width, dtype=torch.float64)
    n_state = torch.zeros(BATCH, heads, width, 1, dtype=torch.float64)
    m_state = torch.zeros(BATCH, heads, 1, 1, dtype=torch.float64)
    readouts = []
    for t in range(steps):
        one = slice(t, t + 1)
        readout, (c_state, n_state, m_state) = recurrent_step_stabilized_simple(
            c_state,
            n_state,
            m_state,
            q[:, :, one].clone(),
            k[:, :, one].clone(),
            v[:, :, one].clone(),
            i[:, :, one, None],
            f[:, :, one, None],
            eps=0.0,
        )
        readouts.append(readout[:, :, 0])
    reference = torch.stack(readouts, 1).reshape(BATCH, steps, units).numpy() * output_gate
    state = (c_state.numpy(), n_state.numpy()[..., 0], m_state.numpy()[..., 0, 0])
    for route in ("false", "true"):
        compare(
            [f"cell.parallel_chunks={route}"],
            inputs,
            reference,
            state,
            "recurrent_step_stabilized_simple",
        )
    # The T × T form: every step's output at once, from a decay matrix stabilised by rows.
    readout = parallel_stabilized_simple(q, k, v, i[..., None], f[..., None], eps=0.0)
    reference = readout.transpose(1, 2).reshape(BATCH, steps, units).numpy() * output_gate
    compare(["cell.parallel_chunks=true"], inputs, reference, None, "parallel_stabilized_simple")

    # The authors' chunked form, which needs a whole number of chunks.
    whole = (steps // chunk_size) * chunk_size
    inputs = rng.normal(size=(BATCH, whole, FEATURES))
    q, k, v, i, f, output_gate = mlstm_reference_inputs(weights, inputs, heads)
    # It scales q by 1/√d where the step form scales k: the same outputs, but its C and n
    # hold the unscaled keys, √d times rnnlab's (and its step form's).
    readout, (c_state, n_state, m_state) = chunkwise_simple(
        q, k, v, i, f, chunk_size=chunk_size, return_last_state=True, eps=0.0
    )
    reference = readout.transpose(1, 2).reshape(BATCH, whole, units).numpy() * output_gate
    scale = np.sqrt(width)
    state = (c_state.numpy() / scale, n_state.numpy() / scale, m_state.numpy()[..., 0, 0])
    compare(["cell.parallel_chunks=true"], inputs, reference, state, "chunkwise_simple")
    return rows


def slstm_rows(rng: np.random.Generator, steps: int = 40) -> list[Row]:
    """The sLSTM's step loop (its only route) against the vanilla backend's."""
    from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

    units, heads = 16, 4
    width = units // heads
    bias = rng.normal(0.0, 0.5, (4, units))
    bias[1] += np.tile(powerlaw_forget_bias(width), heads)
    weights = {
        "kernel": rng.normal(0.0, 0.5, (FEATURES, 4 * units)),
        # Non-zero (the reference starts it at zero): the heads' own pasts enter every gate.
        "recurrent_kernel": rng.normal(0.0, 0.5, (heads, width, 4 * width)),
        "bias": bias.reshape(-1),
    }
    inputs = rng.normal(size=(BATCH, steps, FEATURES))
    cell = built_cell("slstm", [f"cell.units={units}", f"cell.heads={heads}"], steps)
    outputs, (hidden, cell_state, normaliser, stabiliser), route = run_rnnlab(cell, weights, inputs)

    every, last, _ = slstm_forward(
        torch.tensor((inputs @ weights["kernel"]).transpose(1, 0, 2)),  # [T, B, 4·units]
        torch.zeros(4, BATCH, units, dtype=torch.float64),  # h, c, n, m
        torch.tensor(weights["recurrent_kernel"].transpose(0, 2, 1)),  # per head: 4·d by d
        torch.tensor(weights["bias"]),
        slstm_pointwise_function_registry["slstm"],
    )
    reference = every[0, 1:].numpy().transpose(1, 0, 2)
    h, c, n, m = last.numpy()
    state_difference = max(
        largest_difference(hidden, h),
        largest_difference(cell_state / normaliser, c / n),
        largest_difference(stabiliser + np.log(normaliser), m + np.log(n)),
    )
    return [
        Row(
            f"slstm ({route})",
            f"xlstm {XLSTM_VERSION} vanilla slstm_forward + slstm pointwise",
            largest_difference(outputs, reference),
            state_difference,
            FLOAT64_TOLERANCE,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="weights' and inputs' seed")
    args = parser.parse_args()
    try:
        installed = importlib.metadata.version("xlstm")
    except importlib.metadata.PackageNotFoundError:
        sys.exit('xlstm is not installed: pip install -e ".[bench]" -c constraints.txt')
    if installed != XLSTM_VERSION:
        print(
            f"note: xlstm {installed} is installed; this check was written against {XLSTM_VERSION}"
        )

    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(args.seed)
    torch.set_num_threads(1)  # tiny shapes: threads would only contend with other work
    rng = np.random.default_rng(args.seed)
    rows = [*s6_rows(rng), *mlstm_rows(rng), *slstm_rows(rng)]

    header = (
        "cell (rnnlab route)",
        "reference",
        "outputs: max abs diff",
        "final state: max abs diff",
        "tolerance",
    )
    table = [
        (
            row.cell,
            row.reference,
            f"{row.outputs:.1e}",
            "—" if row.state is None else f"{row.state:.1e}",
            f"{row.tolerance:.0e}",
        )
        for row in rows
    ]
    print(f"batch {BATCH}, {FEATURES} inputs, random weights (seed {args.seed}); rnnlab in float64")
    print("| " + " | ".join((*header, "verdict")) + " |")
    print("|" + "---|" * (len(header) + 1))
    for row, cells in zip(rows, table):
        verdict = "matches" if row.matches else "MISMATCH"
        print("| " + " | ".join((*cells, verdict)) + " |")
    if not all(row.matches for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
