"""The MoGLE ablation table: every variant trained from scratch with one config, evaluated on the same items,
compared against full MoGLE with paired intervals. Resumable: finished runs and evaluations are reused, an
interrupted run resumes from its last checkpoint.

Variants (the paper's rows, plus an unconditional model): full MoGLE; no gating (a plain sum); a static
gate (no t, no x_t); a scalar gate (one weight per expert); the global expert alone; the 19 local experts
alone; neither experts nor gate; unconditional. --seeds 2 trains full, static gate, global-only and
no-gating twice; --only trains the variants it names and compares them with full MoGLE (seed 0: restored
where it is kept, else trained) and with every other kept evaluation (restored, never trained).

    python benchmarks/ablation.py                                         # CPU: configs/ablation.yaml
    python benchmarks/ablation.py --config configs/default128.yaml --device cuda \\
        --runs runs/ablation_default --results results/ablation_default   # a GPU: the default model's budget

Each finished evaluation is also kept in --results (results/ablation) without its generated images: commit
it, and a later session (whose run folders are new) restores it instead of training the variant again.

Conditional variants are evaluated in mask and text + mask modes, the unconditional one without
conditions. Prints the comparison table and writes it (with a sample grid) beside the runs, and after it
the verdicts: a variant differs from full MoGLE only where every seed's paired interval excludes 0 on the
same side and the difference exceeds the seed-to-seed floor (full MoGLE's own seed-to-seed difference for a
variant trained twice; the largest of any variant trained twice for one trained once; no verdict where
that floor is not measured).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facemogle.cli import main as facemogle
from facemogle.io import read_json, read_options
from facemogle.metrics.archive import (
    ArchiveError,
    archive_evaluation,
    evaluators_fingerprint,
    restore_evaluation,
)
from facemogle.metrics.compare import compare
from facemogle.train.checkpoints import DONE, latest_checkpoint
from facemogle.train.config import TrainConfig

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
# Trained with a second seed under --seeds 2: full MoGLE, the global expert alone and no gating as planned,
# and the static gate, added when its first seed led full MoGLE by about the largest seed-to-seed swing
# measured.
SEEDED = ("full", "static_gate", "global_only", "no_gating")


def _folder_name(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}_seed{seed}"


def run(args: list[str]) -> None:
    code = facemogle(args)
    if code:
        raise SystemExit(f"facemogle {' '.join(args)} failed with exit code {code}")


def train(config: str, folder: Path, flags: list[str], data: str | None, steps: int) -> None:
    """Train a variant, or resume it; a finished run is left as it is. A run started for another budget
    or seed is refused (never mixed into the table)."""
    started = (folder / "train_config.json").exists()
    if started and latest_checkpoint(folder) is not None:
        saved = read_json(folder / "train_config.json")
        seed = int(flags[flags.index("--seed") + 1])
        if (saved["steps"], saved["seed"]) != (steps, seed):
            raise SystemExit(
                f"{folder} was trained for {saved['steps']} steps with seed {saved['seed']}, this table asks for "
                f"{steps} with seed {seed}: pass another --runs folder (or remove {folder})."
            )
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
    parser.add_argument(
        "--results",
        default="results/ablation",
        help="where each finished evaluation is kept without its generated images (commit it: a later session "
        "restores it instead of training and evaluating the variant again)",
    )
    parser.add_argument("--steps", type=int, help="override the config's steps (every variant alike)")
    parser.add_argument("--seeds", type=int, default=2, choices=(1, 2))
    parser.add_argument("--n", type=int, default=200, help="test items per evaluation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(VARIANTS),
        help="train and evaluate these variants only (full MoGLE and the kept evaluations are compared too)",
    )
    args = parser.parse_args()
    runs = Path(args.runs)
    options = read_options(args.config)
    data, steps = (
        args.data or str(options["data"]),
        args.steps or int(options.get("steps", TrainConfig.steps)),
    )
    jobs = [(name, seed) for name in VARIANTS for seed in range(args.seeds if name in SEEDED else 1)]
    if args.only:
        results = Path(args.results)
        jobs = [job for job in jobs if job[0] in args.only or job == ("full", 0)
                or (results / f"eval_{_folder_name(*job)}").exists()]  # fmt: skip
    evaluations, evaluators = [], evaluators_fingerprint()
    for name, seed in jobs:
        folder = runs / _folder_name(name, seed)
        out, kept = runs / f"eval_{folder.name}", Path(args.results) / f"eval_{folder.name}"
        evaluations.append(str(out))
        flags = VARIANTS[name] + ["--seed", str(seed)] + (["--steps", str(args.steps)] if args.steps else [])
        made_for = {"config": {k: v for k, v in options.items() if k != "out"}, "data": data, "flags": flags,
                    "steps": steps, "n": args.n, "evaluators": evaluators}  # fmt: skip
        try:
            if restore_evaluation(kept, out, made_for):
                continue
        except ArchiveError as error:
            raise SystemExit(str(error)) from None
        train(args.config, folder, flags, args.data, steps)
        modes = ["none"] if name == "unconditional" else ["mask", "both"]
        run(["eval", "--model", str(folder / "model"), "--data", data, "--n", str(args.n), "--mode", *modes,
             "--out", str(out), "--device", args.device])  # fmt: skip
        archive_evaluation(out, kept, made_for)
    if len(evaluations) == 1:
        print(
            f"{evaluations[0]}: one evaluation, nothing to compare it with (drop --seeds 1 or add variants)."
        )
        return
    run(["compare", *evaluations, "--out", str(runs / "compare.md"), "--grid", str(runs / "samples.png"),
         "--overwrite"])  # fmt: skip
    if jobs[0] == ("full", 0):  # the verdicts are against full MoGLE
        text = verdicts(compare(evaluations), steps, args.n)
        print(text)
        (runs / "compare.md").write_text((runs / "compare.md").read_text() + "\n" + text)


METRICS = (("mask", "miou"), ("both", "miou"), ("both", "accuracy"))


def verdicts(rows: list[dict], steps: int, n: int) -> str:
    """Per variant and metric: each seed's Δ against full MoGLE (seed 0) and whether it differs — every
    seed's interval on the same side of 0 and |Δ| above the seed-to-seed floor training noise sets: full
    MoGLE's own |seed 1 − seed 0| for a variant trained twice, the largest of any variant trained twice for
    one trained once (one seed cannot show its own spread)."""
    delta = {(Path(r["eval"]).name.removeprefix("eval_"), r["mode"], m): (r[f"{m}_difference"], r[f"{m}_difference_interval"])
             for r in rows for m in ("miou", "accuracy") if r.get(f"{m}_difference") is not None}  # fmt: skip
    lines = [f"Every run {steps} steps, the same {n} test items. Verdicts against full MoGLE (seed 0): a variant "
             "differs where every seed's paired interval is on the same side of 0 and |Δ| exceeds the seed-to-seed "
             "floor: full MoGLE's |seed 1 − seed 0| for a variant trained twice, the largest |seed 1 − seed 0| of "
             "any variant trained twice for a variant trained once.", "",
             "| variant | metric | Δ (seed 0) | Δ (seed 1) | seed-to-seed floor | verdict |", "|---|---|---|---|---|---|"]  # fmt: skip
    swings = {(mode, metric): _swings(delta, mode, metric) for mode, metric in METRICS}
    for name in [n for n in VARIANTS if n not in ("full", "unconditional")]:
        for mode, metric in METRICS:
            seeds = [delta.get((f, mode, metric)) for f in (name, f"{name}_seed1")]
            seeds = [d for d in seeds if d is not None]
            if not seeds:
                continue
            floor = _floor(swings[mode, metric], len(seeds))
            lines.append(f"| {name} | {mode} {metric} | " + " | ".join(
                [_delta(seeds[0]), _delta(seeds[1]) if len(seeds) > 1 else "–",
                 f"{floor[1]:.3f} ({floor[0]})" if floor else "–", _verdict(seeds, floor and floor[1])]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _swings(delta: dict, mode: str, metric: str) -> dict[str, float]:
    """|seed 1 − seed 0| in one metric of each variant trained twice (full MoGLE's: its seed 1's |Δ|)."""
    swings = {}
    for name in VARIANTS:
        first = (0.0, None) if name == "full" else delta.get((name, mode, metric))
        second = delta.get((f"{name}_seed1", mode, metric))
        if first and second:
            swings[name] = abs(second[0] - first[0])
    return swings


def _floor(swings: dict[str, float], seeds: int) -> tuple[str, float] | None:
    """(whose, |Δ|): full MoGLE's swing for a variant trained twice, the largest swing for one trained once."""
    if seeds > 1:
        return ("full", swings["full"]) if "full" in swings else None
    return max(swings.items(), key=lambda item: item[1], default=None)


def _delta(d: tuple[float, list[float]]) -> str:
    return f"{d[0]:+.3f} [{d[1][0]:+.3f}, {d[1][1]:+.3f}]"


def _verdict(seeds: list, floor) -> str:
    above = all(low > 0 for _, (low, _high) in seeds)
    below = all(high < 0 for _, (_low, high) in seeds)
    if floor is None:
        return "no verdict: no seed-to-seed floor measured"
    beyond_noise = all(abs(d) > floor for d, _ in seeds)
    if (above or below) and beyond_noise:
        return "better than full" if above else "worse than full"
    return "no difference shown"


if __name__ == "__main__":
    main()
