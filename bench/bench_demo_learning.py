"""Does the demo show the method? Per-family accuracy of base, SFT, uniform-GRPO and VAS-GRPO.

Reads finished demo homes (``--home DIR ...``) or first runs ``mmr1 demo`` into a
fresh home per seed (``--run --seeds 0 1 2``), then prints for each home:

* per checkpoint and task family: items, greedy accuracy with its Wilson 95%
  interval, sampled accuracy (mean over items of the fraction of the k
  samples at T=1 that are right) with its t interval over items;
* paired tests of every model against the SFT model on the same items
  (``mmr1.eval.significance``, the code behind ``mmr1 eval compare``): exact
  McNemar on greedy correctness, paired t on per-item sampled accuracy;
* the two GRPO runs' summaries from the catalog (mean
  ``zero_accuracy_variance_frac``, training accuracy of the first and last 10%
  of steps) and the VAS / uniform ratio;
* the acceptance checks of the demo (SFT greedy >= base + 0.20; VAS sampled >
  SFT with p < 0.05; VAS greedy >= SFT - 0.01; zero-variance ratio <= 0.85);
* each model's most frequent greedy answer per family, flagged COLLAPSED when it
  is the answer to 90% or more of a family's items (a model that no longer
  reads the image; seed 3 of the demo's SFT on 2 threads does this);

and, over several homes, the mean and range of the headline figures, how often
each check held, and each RL effect (VAS and uniform against SFT, VAS against
uniform; greedy and sampled) over the homes whose SFT model learned: its mean
in points, the t interval of that mean over seeds and the paired t-test's p.
One demo is one draw of each effect; this is what the recipe does on average.

The seed knob of ``--run``: seed ``s`` sets ``base_model.seed``,
``sft.train.seed``, ``vps.seed`` and ``grpo.train.seed`` (the uniform ablation
inherits the GRPO seed) to ``s``; data, benchmark and evaluation sampling stay
fixed, so the seeds measure training variance. Each run is timed (wall clock,
CPU seconds of the whole process tree, load average before and after): on a
shared machine wall time is inflated by other work, CPU seconds much less.

A home that holds several variants (say two GRPO runs with different settings)
is read with explicit versions: ``--vas tiny-grpo@4 --uniform tiny-grpo-uniform@2``.

Usage::

    python bench/bench_demo_learning.py --home ~/.mmr1
    python bench/bench_demo_learning.py --run --seeds 0 1 2 --work /tmp/demo-seeds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.catalog import Catalog
from mmr1.eval.significance import outcomes_from_predictions, paired_test
from mmr1.eval.stats import mean_interval, paired_t_test, wilson_interval
from schemas.home import HomeConfig

#: Roles in the order they are printed, with the demo preset's catalog names.
ROLES = {
    "base": "tiny-qwen2.5-vl",
    "sft": "tiny-sft",
    "uniform": "tiny-grpo-uniform",
    "vas": "tiny-grpo",
}
SEED_FIELDS = ("base_model.seed", "sft.train.seed", "vps.seed", "grpo.train.seed")
ZERO_VAR = "run/zero_accuracy_variance_frac_mean"
#: A model that gives one answer to this share of a family's items has stopped reading
#: the image (the demo's answers are spread over 4-6 options, so a working one is far below).
COLLAPSE_SHARE = 0.9


@dataclass
class HomeReport:
    """Headline figures of one demo home (NaN-free: missing figures are absent)."""

    home: Path
    figures: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    collapsed: list[str] = field(default_factory=list)
    #: The roles (base, sft, uniform, vas) whose model gave one answer to a whole family.
    collapsed_roles: set[str] = field(default_factory=set)


def top_answer(frame: pl.DataFrame) -> tuple[str, float]:
    """The most frequent greedy answer of some items and its share (no answer counts as "")."""
    counts = frame["extracted"].fill_null("").value_counts(sort=True, name="count")
    answer, count = counts.row(0)
    return str(answer), count / frame.height


# ------------------------------------------------------------------------ reading


def _predictions(catalog: Catalog, name: str, benchmark: str) -> tuple[str, pl.DataFrame] | None:
    """(checkpoint ref, predictions frame) of ``name`` (a bare name: its latest version)."""
    try:
        ref = catalog.get_checkpoint(name).ref
    except Exception:  # noqa: BLE001 - not in this home (e.g. the ablation was skipped)
        return None
    results = [
        r
        for r in catalog.eval_results(checkpoint_ref=ref, benchmark=benchmark)
        if r.predictions_uri
    ]
    if not results:
        return None
    frame = pl.read_parquet(results[-1].predictions_uri)
    families = [json.loads(tags).get("family", "?") for tags in frame["tags"].to_list()]
    return ref, frame.with_columns(pl.Series("family", families))


def _cell(frame: pl.DataFrame) -> dict[str, Any]:
    """n, greedy accuracy and interval, sampled accuracy and interval of some items."""
    outcomes = outcomes_from_predictions(frame)
    n = len(outcomes.greedy)
    cell: dict[str, Any] = {"n": n, "greedy": sum(outcomes.greedy) / n}
    cell["greedy_ci"] = wilson_interval(sum(outcomes.greedy), n)
    if outcomes.sampled is not None:
        cell["sampled"] = sum(outcomes.sampled) / n
        cell["sampled_ci"] = mean_interval(outcomes.sampled)
        cell["k"] = outcomes.sampled_k
    return cell


def _fmt(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return f"{'-':>21}"
    ci = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else " " * 14
    return f"{value:.3f} {ci}"


def _format_p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def report_home(home: Path, roles: dict[str, str], benchmark: str) -> HomeReport:
    """Print the per-family table, paired tests and GRPO summaries of one home."""
    catalog = Catalog(HomeConfig(root=home).catalog)
    report = HomeReport(home)
    found = {role: _predictions(catalog, name, benchmark) for role, name in roles.items()}
    print(f"\n== {home} ({benchmark} benchmark)")
    print(
        f"{'checkpoint':<22} {'family':<13} {'n':>4}  {'greedy [95% CI]':<21}  "
        f"{'sampled [95% CI]':<21}  top answer"
    )
    for role, hit in found.items():
        if hit is None:
            print(f"{roles[role]:<22} (not evaluated in this home)")
            continue
        ref, frame = hit
        groups = [*sorted(set(frame["family"].to_list())), "all"]
        for family in groups:
            part = frame if family == "all" else frame.filter(pl.col("family") == family)
            cell = _cell(part)
            answer, share = top_answer(part)
            print(
                f"{ref:<22} {family:<13} {cell['n']:>4}  {_fmt(cell['greedy'], cell['greedy_ci'])}"
                f"  {_fmt(cell.get('sampled'), cell.get('sampled_ci'))}  {answer!r} {share:.0%}"
            )
            if family != "all" and role != "base" and share >= COLLAPSE_SHARE:
                report.collapsed.append(f"{ref} answers {answer!r} to {share:.0%} of {family}")
                report.collapsed_roles.add(role)
            if family == "all":
                report.figures[f"{role}_greedy"] = cell["greedy"]
                if "sampled" in cell:
                    report.figures[f"{role}_sampled"] = cell["sampled"]
    for line in report.collapsed:
        print(f"COLLAPSED (the image is ignored): {line}")
    _paired(found, report)
    _grpo_runs(catalog, roles, report)
    _checks(report)
    return report


def _paired(found: dict[str, Any], report: HomeReport) -> None:
    if found.get("sft") is None:
        return
    sft_ref, sft_frame = found["sft"]
    baseline = outcomes_from_predictions(sft_frame)
    print(f"paired tests against {sft_ref} (McNemar on greedy, paired t on sampled):")
    for role, hit in found.items():
        if hit is None or role == "sft":
            continue
        test = paired_test(outcomes_from_predictions(hit[1]), baseline)
        print(
            f"  {hit[0]:<22} p_value {_format_p(test.p_value):>8}  "
            f"sampled_p_value {_format_p(test.sampled_p_value):>8}  "
            f"(greedy discordant: {test.baseline_only} SFT only, {test.model_only} model only)"
        )
        if test.p_value is not None:
            report.figures[f"{role}_p_value"] = test.p_value
        if test.sampled_p_value is not None:
            report.figures[f"{role}_sampled_p_value"] = test.sampled_p_value


def _grpo_runs(catalog: Catalog, roles: dict[str, str], report: HomeReport) -> None:
    for role in ("uniform", "vas"):
        try:
            entry = catalog.get_checkpoint(roles[role])
        except Exception:  # noqa: BLE001 - the ablation may be absent
            continue
        metrics = entry.metrics or {}
        mode = (entry.config or {}).get("sampling_mode", "?")
        figures = {k: metrics[k] for k in (ZERO_VAR, "run/zero_variance_frac_mean") if k in metrics}
        first, last = (
            metrics.get("run/accuracy_first_10pct"),
            metrics.get("run/accuracy_last_10pct"),
        )
        print(
            f"GRPO {entry.ref} ({mode}): "
            + ", ".join(f"{k.removeprefix('run/')} {v:.3f}" for k, v in figures.items())
            + (f", training accuracy {first:.3f} -> {last:.3f}" if first is not None else "")
            + (f" over {metrics['run/steps']:.0f} steps" if "run/steps" in metrics else "")
        )
        if ZERO_VAR in metrics:
            report.figures[f"{role}_zero_var"] = metrics[ZERO_VAR]
    zero = report.figures
    if "vas_zero_var" in zero and zero.get("uniform_zero_var"):
        zero["zero_var_ratio"] = zero["vas_zero_var"] / zero["uniform_zero_var"]
        print(f"zero_accuracy_variance_frac VAS / uniform: {zero['zero_var_ratio']:.3f}")


def _checks(report: HomeReport) -> None:
    f = report.figures
    needed = {
        "SFT greedy >= base + 0.20": ("sft_greedy", "base_greedy"),
        "VAS sampled > SFT, p < 0.05": ("vas_sampled", "sft_sampled", "vas_sampled_p_value"),
        "VAS greedy >= SFT - 0.01": ("vas_greedy", "sft_greedy"),
        "zero-variance VAS <= 0.85 x uniform": ("zero_var_ratio",),
    }
    tests = {
        "SFT greedy >= base + 0.20": lambda: f["sft_greedy"] >= f["base_greedy"] + 0.20,
        "VAS sampled > SFT, p < 0.05": lambda: (
            f["vas_sampled"] > f["sft_sampled"] and f["vas_sampled_p_value"] < 0.05
        ),
        # In items: "- 0.01" in floating point would fail an exact 5-in-500 drop.
        "VAS greedy >= SFT - 0.01": lambda: f["vas_greedy"] - f["sft_greedy"] >= -0.01 - 1e-9,
        "zero-variance VAS <= 0.85 x uniform": lambda: f["zero_var_ratio"] <= 0.85,
    }
    for name, keys in needed.items():
        if all(k in f for k in keys):
            report.checks[name] = bool(tests[name]())
    if "uniform_sampled" in f and "vas_sampled" in f:
        print(
            f"VAS - uniform: greedy {f['vas_greedy'] - f['uniform_greedy']:+.3f}, "
            f"sampled {f['vas_sampled'] - f['uniform_sampled']:+.3f}"
        )
    print(
        "acceptance: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in report.checks.items())
    )


def aggregate(reports: list[HomeReport]) -> None:
    """Mean and range over homes of every headline figure, and how often each check held."""
    print(f"\n== over {len(reports)} homes: mean [min, max]")
    keys = sorted({k for r in reports for k in r.figures})
    for key in keys:
        values = [r.figures[key] for r in reports if key in r.figures]
        mean = statistics.fmean(values)
        print(f"  {key:<26} {mean:.4g} [{min(values):.4g}, {max(values):.4g}]  (n={len(values)})")
    names = sorted({k for r in reports for k in r.checks})
    for name in names:
        held = sum(r.checks.get(name, False) for r in reports)
        print(f"  {name}: {held}/{len(reports)}")
    collapsed = [r.home for r in reports if r.collapsed]
    print(f"  homes with a collapsed model: {len(collapsed)}/{len(reports)} {collapsed or ''}")
    seed_effects(reports)


#: Paired effects over homes: (label, figure, baseline figure).
EFFECTS = (
    ("VAS - SFT, greedy", "vas_greedy", "sft_greedy"),
    ("VAS - SFT, sampled", "vas_sampled", "sft_sampled"),
    ("uniform - SFT, greedy", "uniform_greedy", "sft_greedy"),
    ("uniform - SFT, sampled", "uniform_sampled", "sft_sampled"),
    ("VAS - uniform, greedy", "vas_greedy", "uniform_greedy"),
    ("VAS - uniform, sampled", "vas_sampled", "uniform_sampled"),
)


def seed_effects(reports: list[HomeReport]) -> None:
    """Each RL effect over the homes whose SFT model learned (one value per seed): its mean,
    the t interval of that mean and the paired t-test's p over seeds. A single demo is one
    draw of each; this is what the recipe does on average. An SFT model that answers one
    colour to a whole family (it learnt the format, not the image) does not count."""
    learned = [
        r
        for r in reports
        if {"sft_greedy", "base_greedy"} <= r.figures.keys()
        and r.figures["sft_greedy"] >= r.figures["base_greedy"] + 0.20
        and "sft" not in r.collapsed_roles
    ]
    if len(learned) < 2:
        return
    print(f"\n== effects over the {len(learned)} homes whose SFT learned (points, 95% t interval)")
    for label, figure, baseline in EFFECTS:
        pairs = [
            (r.figures[figure], r.figures[baseline])
            for r in learned
            if {figure, baseline} <= r.figures.keys()
        ]
        if len(pairs) < 2:
            continue
        diffs = [100 * (a - b) for a, b in pairs]
        interval = mean_interval(diffs, bounds=None)
        p_value = paired_t_test([a for a, _ in pairs], [b for _, b in pairs])
        assert interval is not None
        print(
            f"  {label:<24} {statistics.fmean(diffs):+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]"
            f"  p {_format_p(p_value)}  (n={len(diffs)}: "
            + " ".join(f"{d:+.1f}" for d in diffs)
            + ")"
        )


# ------------------------------------------------------------------------ running


def run_demo(home: Path, seed: int, extra: list[str]) -> dict[str, float]:
    """``mmr1 --home HOME demo`` with the seed overrides; wall and CPU seconds and load."""
    mmr1 = Path(sys.executable).with_name("mmr1")
    command = [str(mmr1), "--home", str(home), "demo"]
    for name in SEED_FIELDS:
        command += ["--set", f"{name}={seed}"]
    for item in extra:
        command += ["--set", item]
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }
    home.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with open(home / "demo.log", "w") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    load_after = os.getloadavg()
    print(
        f"demo seed {seed} -> {home}: wall {wall:.0f} s, CPU {cpu:.0f} s (process tree), "
        f"load average before {load_before[0]:.1f}/{load_before[1]:.1f}, "
        f"after {load_after[0]:.1f}/{load_after[1]:.1f} (1/5 min)",
        flush=True,
    )
    return {"wall_s": wall, "cpu_s": cpu, "load_1min_after": load_after[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", nargs="*", type=Path, default=[], help="finished demo homes")
    parser.add_argument("--run", action="store_true", help="run mmr1 demo once per seed first")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmr1-demo-seeds"))
    parser.add_argument("--set", action="append", default=[], help="extra demo override")
    parser.add_argument("--benchmark", default="synthetic")
    for role, name in ROLES.items():
        parser.add_argument(
            f"--{role}",
            default=name,
            help=f"catalog ref of the {role} model (name: its latest version; name@N: version N)",
        )
    args = parser.parse_args(argv)
    roles = {role: getattr(args, role) for role in ROLES}
    homes: list[tuple[Path, dict[str, float]]] = [(h.expanduser(), {}) for h in args.home]
    if args.run:
        for seed in args.seeds:
            home = args.work / f"seed-{seed}"
            homes.append((home, run_demo(home, seed, args.set)))
    if not homes:
        parser.error("give --home DIR or --run")
    reports = []
    for home, timing in homes:
        report = report_home(home, roles, args.benchmark)
        report.figures.update(timing)
        reports.append(report)
    if len(reports) > 1:
        aggregate(reports)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
