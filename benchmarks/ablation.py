"""The MoGLE ablation table: every variant trained from scratch with one config, evaluated on the same items,
compared against full MoGLE with paired intervals. Resumable: finished runs and evaluations are reused, an
interrupted run resumes from its last checkpoint.

Variants (the paper's rows, plus an unconditional model): full MoGLE; no gating (a plain sum); a static
gate (no t, no x_t); a scalar gate (one weight per expert); the global expert alone; the 19 local experts
alone; neither experts nor gate; unconditional. --seeds 2 trains full, global-only and no-gating twice.

    python benchmarks/ablation.py                                         # CPU: configs/ablation.yaml
    python benchmarks/ablation.py --config configs/default.yaml --device cuda --data data/synthface128 \\
        --runs runs/ablation_default                                      # a GPU: the default model's budget

Prints the comparison table and writes it (with a sample grid) beside the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facemogle.cli import main as facemogle
from facemogle.train.checkpoints import CHECKPOINTS, DONE

VARIANTS = {
    "full": [],
    "no_gating": ["--gating", "none"],
    "static_gate": ["--gating", "static"],
    "scalar_gate": ["--gating", "scalar"],
    "global_only": ["--local-experts", "false"],
    "local_only": ["--global-expert", "false"],
    "no_experts_no_gate": ["--experts", "false", "--gating", "none"],
    "unconditional": ["--drop-text", "1", "--drop-mask", "1"],
}
SEEDED = ("full", "global_only", "no_gating")  # trained with a second seed under --seeds 2


def run(args: list[str]) -> None:
    code = facemogle(args)
    if code:
        raise SystemExit(f"facemogle {' '.join(args)} failed with exit code {code}")


def train(config: str, folder: Path, flags: list[str], data: str | None) -> None:
    """Train a variant, or resume it; a finished run is left as it is."""
    started = (folder / "train_config.json").exists()
    if started and any((folder / CHECKPOINTS).glob("*")):
        if not (folder / DONE).exists():
            run(["train", "--resume", "--out", str(folder)])
        return
    restart = ["--overwrite"] if started else []  # stopped before its first checkpoint: start it again
    run(
        [
            "train",
            "--config",
            config,
            "--out",
            str(folder),
            *flags,
            *(["--data", data] if data else []),
            *restart,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/ablation.yaml")
    parser.add_argument("--data", help="SynthFace folder (default: the config's)")
    parser.add_argument("--runs", default="runs/ablation", help="folder of the runs and evaluations")
    parser.add_argument("--steps", type=int, help="override the config's steps (every variant alike)")
    parser.add_argument("--seeds", type=int, default=2, choices=(1, 2))
    parser.add_argument("--n", type=int, default=200, help="test items per evaluation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--only", nargs="+", choices=list(VARIANTS), help="train and evaluate these variants only"
    )
    args = parser.parse_args()
    runs = Path(args.runs)
    data = args.data or _config_value(args.config, "data")
    jobs = [(name, seed) for name in VARIANTS for seed in range(args.seeds if name in SEEDED else 1)]
    if args.only:
        jobs = [(name, seed) for name, seed in jobs if name in args.only]
    evaluations = []
    for name, seed in jobs:
        folder = runs / (name if seed == 0 else f"{name}_seed{seed}")
        flags = VARIANTS[name] + ["--seed", str(seed)] + (["--steps", str(args.steps)] if args.steps else [])
        train(args.config, folder, flags, args.data)
        out = runs / f"eval_{folder.name}"
        mode = "none" if name == "unconditional" else "mask"
        run(["eval", "--model", str(folder / "model"), "--data", data, "--n", str(args.n), "--mode", mode,
             "--out", str(out), "--device", args.device])  # fmt: skip
        evaluations.append(str(out))
    run(["compare", *evaluations, "--out", str(runs / "compare.md"), "--grid", str(runs / "samples.png"),
         "--overwrite"])  # fmt: skip


def _config_value(path: str, key: str) -> str:
    from facemogle.io import read_options

    return str(read_options(path)[key])


if __name__ == "__main__":
    main()
