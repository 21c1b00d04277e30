"""What weight averaging (`trainer.ema_momentum`) costs a training step, on translation.

The optimizer's moving average is one more read and write of every weight per step; this
times training on the same batches with and without it. The two models are interleaved
round by round after a warm-up (epoch times on these machines flip between modes 2x
apart), and the ratio is between medians of this one run. Validation is left out: it
costs the same either way.

    .venv/bin/python benchmarks/averaging_cost.py --rounds 10 --batches 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import configure_threads  # noqa: E402

configure_threads()  # the threads `rnnlab train` sets, before TensorFlow starts

from throughput import EpochClock  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.train import build_compiled_model, seed_everything  # noqa: E402


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per contender")
    parser.add_argument("--batches", type=int, default=40, help="training batches per round")
    parser.add_argument("--momentum", type=float, default=0.998)
    args = parser.parse_args()

    base = compose_config(["task=translation", f"cell={args.cell}"])
    seed_everything(base.seed, reproducible=False)
    task = get_task(base.task, base.data_dir)
    data = task.load(batch_size=base.trainer.batch_size, seed=base.seed)
    batches = data.train.take(args.batches).cache()
    contenders = {
        "raw": build_compiled_model(base, task),
        "averaged": build_compiled_model(
            compose_config(
                ["task=translation", f"cell={args.cell}", f"trainer.ema_momentum={args.momentum}"]
            ),
            task,
        ),
    }
    clocks = {name: EpochClock() for name in contenders}
    for round_index in range(args.rounds + 1):  # round 0 warms both up
        for name, model in contenders.items():
            model.fit(
                batches, epochs=1, verbose=0, shuffle=False, callbacks=clocks[name].around([])
            )
            if round_index == 0:
                clocks[name].seconds.clear()
    medians = {name: statistics.median(clock.seconds) for name, clock in clocks.items()}
    print(
        f"{cpu_name()}, translation × {args.cell}, {args.batches} batches a round, "
        f"{args.rounds} rounds each, interleaved"
    )
    for name, clock in clocks.items():
        print(f"  {name:9s} median {medians[name]:.2f} s  fastest {min(clock.seconds):.2f} s")
    print(f"  averaged / raw: {medians['averaged'] / medians['raw']:.3f} of the time a round")


if __name__ == "__main__":
    main()
