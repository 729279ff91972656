"""Rebuild every table and figure of the three papers: `python -m experiments.reproduce`.

Runs each reproduction module of `experiments/` in a fresh process at one profile
(`quick`: tiny sizes, minutes on 2 cores; `cpu`: the largest sizes a 2-core 24 GB machine
finishes in a few hours; `gpu`: the papers' sizes, for a GPU with the datasets in place),
skips modules whose results are already there for the same code and profile (a hash of the
module's source and the profile), carries on after a failure, and writes `REPORT.md`: a
summary of what ran, what failed and why, then each module's tables and figures.

    python -m experiments.reproduce --profile quick --out /tmp/report
    python -m experiments.reproduce --profile cpu              # results/ (committed)
    python -m experiments.reproduce --only ssm_memory --force  # one module, ignoring the cache
    python -m experiments.reproduce --report-only              # REPORT.md from the results there
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.report import results_dir

ROOT = Path(__file__).resolve().parent.parent
PAPERS: dict[str, tuple[str, list[str]]] = {
    "ssm": (
        "Adjoint sharding for very long context training of SSMs (Xu et al., arXiv 2501.00692)",
        ["ssm_memory", "ssm_time", "ssm_vjp_counts", "ssm_context", "ssm_layouts", "ssm_training"],
    ),
    "cnode": (
        "Characteristic Neural ODEs (Xu et al., ICLR 2023, arXiv 2111.13207)",
        [
            "cnode_accuracy",
            "cnode_k_ablation",
            "cnode_param_sweep",
            "cnode_crossing",
            "cnode_cnf",
            "cnode_speed",
            "cnode_fashion_mnist",
        ],
    ),
    "parabolic": (
        "Base models for parabolic PDEs (UAI 2024, arXiv 2407.12234)",
        ["parabolic_figure4", "parabolic_speed", "parabolic_table1", "parabolic_figure3"],
    ),
    "core": ("ODE gradient methods of adjoint_lab.core (issue 14)", ["ode_adjoints"]),
}


# Why a module cannot run as the paper did on a 2-core CPU without the datasets: the conditions
# of the `cpu` profile, whose results are committed (shown for that profile and --report-only;
# each module's file says what came out of them).
CONDITIONS: dict[str, str] = {
    "ssm_memory": "no GPU: XLA's compile-time plan on CPU stands in for measured GPU memory",
    "ssm_time": "CPU timings, ratios in one run",
    "ssm_vjp_counts": "exact counts (no hardware dependence)",
    "ssm_context": "a 2-core, 24 GB CPU instead of the paper's GPUs",
    "ssm_layouts": "8 simulated CPU devices (1-D layouts on 4, 2-D on 2 × 4), compile-time plans",
    "ssm_training": "CPU-sized model and steps; the paper trains none of its estimators",
    "cnode_accuracy": "no MNIST/SVHN/CIFAR-10 files and no GPU: sklearn digits, few epochs",
    "cnode_k_ablation": "sklearn digits instead of the paper's datasets, few epochs",
    "cnode_param_sweep": "sklearn digits instead of the paper's datasets, few epochs",
    "cnode_crossing": "as in the paper",
    "cnode_cnf": "CPU-sized training (600 steps)",
    "cnode_speed": "CPU, batch 4, at initialisation",
    "cnode_fashion_mnist": "Fashion-MNIST (Debian's package) instead of MNIST; 2 epochs, 3 seeds",
    "parabolic_figure4": "CPU sizes: fewer paths, steps and training steps than the paper",
    "parabolic_speed": "CPU timings (the paper's are on a GPU), ratios in one run",
    "parabolic_table1": "CPU sizes (grids, training steps); five training runs as in the paper",
    "parabolic_figure3": "CPU-sized training; the 100-d panel with 4 tasks and smaller networks",
    "ode_adjoints": "CPU timings, ratios in one run; compile-time memory plans; C-NODE on 2 images",
}


def _fingerprint(module: str, profile: str) -> str:
    source = (ROOT / "experiments" / f"{module}.py").read_bytes()
    shared = (ROOT / "experiments" / "report.py").read_bytes()
    return hashlib.sha256(source + shared + profile.encode()).hexdigest()[:16]


def _run_module(module: str, profile: str, out: Path, log: Path) -> tuple[str, str]:
    """Run one module in a fresh process; returns (status, note)."""
    command = [sys.executable, "-m", f"experiments.{module}", "--profile", profile]
    if out.resolve() != results_dir().resolve():  # keep the default out of the recorded command
        command += ["--out", str(out)]
    env = {**os.environ, "ADJOINT_LAB_RESULTS": str(out)}
    with log.open("w") as stream:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode == 0:
        return "done", ""
    tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
    return "failed", f"exit {done.returncode}: {tail[0][:200]} (log: {log.name})"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "cpu", "gpu"), default="quick")
    parser.add_argument("--out", default=None, help="results folder (default: results/)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these modules")
    parser.add_argument("--force", action="store_true", help="rerun even if cached")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing; write REPORT.md from the results files already in the folder",
    )
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else results_dir()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cache_path = out / "cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    summary = []
    for paper, (_, modules) in PAPERS.items():
        for module in modules:
            if args.only is not None and module not in args.only:
                continue
            if not (ROOT / "experiments" / f"{module}.py").exists():
                summary.append((paper, module, "missing", "no such module yet", 0.0))
                continue
            if args.report_only:
                present = (out / f"{module}.md").exists()
                summary.append((paper, module, "present" if present else "not run", "", 0.0))
                continue
            key = _fingerprint(module, args.profile)
            cached = cache.get(module, {})
            if not args.force and cached.get("key") == key and (out / f"{module}.md").exists():
                summary.append((paper, module, "cached", cached.get("note", ""), 0.0))
                continue
            print(f"[reproduce] {module} ({args.profile}) ...", flush=True)
            start = time.time()
            status, note = _run_module(module, args.profile, out, logs / f"{module}.log")
            elapsed = time.time() - start
            print(f"[reproduce] {module}: {status} in {elapsed:.0f} s {note}", flush=True)
            if status == "done":
                cache[module] = {"key": key, "profile": args.profile, "seconds": elapsed}
            summary.append((paper, module, status, note, elapsed))
            cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    command = "--report-only" if args.report_only else f"--profile {args.profile}"
    conditions = CONDITIONS if args.report_only or args.profile == "cpu" else {}
    return _write_report(out, command, summary, conditions)


def _verdicts(md: Path) -> str:
    """'2 PASS, 1 FAIL' from the rows of a results file's targets table; '' if none."""
    if not md.exists():
        return ""
    rows = [line for line in md.read_text().splitlines() if line.startswith("|")]
    counts = {v: sum(line.rstrip(" |").endswith(v) for line in rows) for v in ("PASS", "FAIL")}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def _write_report(out: Path, command: str, summary: list, conditions: dict[str, str]) -> Path:
    lines = [
        "# Reproduction report",
        f"Regenerate: `python -m experiments.reproduce {command}`. Each section below "
        "is the module's own results file (`<module>.md`), with the command that regenerates "
        "it (and the profile it ran), the paper's numbers beside ours, and its figures.",
        "## Summary",
        "Targets: the PASS / FAIL verdicts of each module's own targets table (a module without "
        "one reports its comparison with the paper in prose below). Conditions: why a module "
        "could not run as the paper did here (hardware, data, sizes); what came out of it, "
        "including where the papers are wrong, is in its section.",
        "\n".join(
            [
                "| paper | module | status | targets | conditions here | note | time (s) |",
                "|---|---|---|---|---|---|---|",
            ]
            + [
                f"| {p} | `{m}` | {s} | {_verdicts(out / f'{m}.md')} | {conditions.get(m, '')} "
                f"| {n} | {f'{t:.0f}' if t else '—'} |"
                for p, m, s, n, t in summary
            ]
        ),
    ]
    for paper, (title, modules) in PAPERS.items():
        lines.append(f"# {title}")
        for module in modules:
            md = out / f"{module}.md"
            if md.exists():  # one heading level down, under the paper's
                text = md.read_text().splitlines()
                lines.append("\n".join("#" + x if x.startswith("#") else x for x in text))
            else:
                status = next((s for p, m, s, _, _ in summary if m == module), "not run")
                lines.append(f"## `{module}`: {status}")
        del paper
    report = out / "REPORT.md"
    report.write_text("\n\n".join(lines) + "\n")
    print(f"[reproduce] wrote {report}")
    return report


if __name__ == "__main__":
    main()
