"""Compare finished training runs in one markdown table: how RECIPES.md's recipe table is made.

  python scripts/recipe_table.py runs/a runs/b ... [--markdown table.md]

Each argument is a run directory (summary.json, run.json, metrics.jsonl). One row per run: seed,
image size (with --train_sizes: the training sizes, then the evaluated size), epochs, the small-data techniques it used, the final validation top-1 of the weights it
exports (the EMA weights when --ema_decay was set; the raw weights' figure beside it), the best
evaluation of those weights and its epoch, the range over the last 10 evaluations (how far a re-run
may land from the final figure), training minutes (training and evaluations, from summary.json;
runs from before that field: the span of metrics.jsonl, marked ~), threads (intra+inter op; auto:
TensorFlow's own choice), and the machine (CPU and its widest unit, oneDNN, precision, XLA).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from toolkit.common import atomic  # noqa: E402
from toolkit.common import machine
from toolkit.common import markdown

HEADER = ("run", "seed", "px", "epochs", "techniques", "final val top-1", "best (epoch)", "last 10 evals", "minutes",
          "threads", "machine")


def _read(path: str):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else json.load(f)


def techniques(config: dict) -> str:
    """The small-data techniques of a run's recorded config, in words ("-": none)."""
    data, train = config.get("data", {}), config.get("train", {})
    depth = config.get("model", {}).get("depth", 50)
    used = [] if depth == 50 else [f"ResNet{depth}V2"]  # the network, when it is not the usual one
    if train.get("ema_decay"):
        used.append(f"EMA {train['ema_decay']:g}")
    if data.get("randaugment"):
        used.append(f"RandAugment {data['randaugment']}")
    if data.get("mixup_alpha"):
        used.append(f"mixup {data['mixup_alpha']:g}")
    if data.get("cutmix_alpha"):
        used.append(f"CutMix {data['cutmix_alpha']:g}")
    if (data.get("mixup_alpha") or data.get("cutmix_alpha")) and data.get("mix_prob", 1.0) < 1.0:
        used[-1] += f" on {100 * data['mix_prob']:g}% of batches"
    return ", ".join(used) or "-"


def pixels(data: dict, image_size) -> str:
    """The image size; with --train_sizes the training sizes in order, then the evaluated one."""
    sizes = [entry.partition("@")[0] for entry in data.get("train_sizes", "").replace(" ", "").split(",") if entry]
    return f"{'>'.join(sizes)}, eval {image_size}" if sizes else str(image_size)


def row(run_dir: str) -> dict:
    """The figures of one finished run (see the module doc)."""
    summary = _read(os.path.join(run_dir, "summary.json"))
    key = "ema_val_top1" if summary.get("exported_weights") == "ema" else "val_top1"
    for field in (key, "val_top1", "image_size", "epochs"):
        if field not in summary:
            raise ValueError(f"summary.json has no {field}")
    config = summary.get("config", {})
    records = _read(os.path.join(run_dir, "metrics.jsonl"))
    evals = [r for r in records if r.get("kind") == "val" and key in r and "epoch" in r]
    if not evals:
        raise ValueError(f"metrics.jsonl holds no evaluation with {key}")
    best = max(evals, key=lambda r: r[key])
    tail = [r[key] for r in evals[-10:]]
    seconds = summary.get("train_seconds")
    if seconds is None:  # runs from before train_seconds: the span of their metrics lines
        times = [r["time"] for r in records if "time" in r] or [0.0]
        seconds, approx = max(times) - min(times), "~"
    else:
        approx = ""
    minutes = f"{approx}{seconds / 60:.1f}"
    final = f"{100 * summary[key]:.1f}%" + (f" (raw {100 * summary['val_top1']:.1f}%)" if key != "val_top1" else "")
    threads = summary.get("threads") or {}
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "seed": config.get("data", {}).get("seed", "?"),
        "px": pixels(config.get("data", {}), summary.get("image_size")),
        "epochs": summary.get("epochs"),
        "techniques": techniques(config),
        "final val top-1": final,
        "best (epoch)": f"{100 * best[key]:.1f}% ({best['epoch']})",
        "last 10 evals": f"{100 * min(tail):.1f}-{100 * max(tail):.1f}%",
        "minutes": minutes,
        "threads": "+".join(str(threads.get(k, "?") or "auto") for k in ("intra_op", "inter_op")),  # 0: TensorFlow's choice
        "machine": machine_words(summary.get("machine") or {}, summary),
    }


def machine_words(machine_record: dict, summary: dict) -> str:
    """CPU (widest unit), oneDNN, precision and XLA: what sets a CPU run's speed (Zen 3 and Zen 4
    both call themselves "AMD EPYC"); records without the CPU's features leave the unit out."""
    cpu = machine_record.get("cpu", "?")
    if machine_record.get("cpu_features") is not None:
        cpu += f" ({machine.widest_unit(machine_record['cpu_features'])})"
    xla = ", XLA" if summary.get("xla") else ""
    return f"{cpu}, oneDNN {machine_record.get('onednn', '?')}, {summary.get('precision', '?')}{xla}"


def markdown_rows(rows: list) -> str:
    return "\n".join(markdown.table(HEADER, ([r[h] for h in HEADER] for r in rows))) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run directories")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = []
    for run_dir in args.runs:
        try:
            rows.append(row(run_dir))
        except (OSError, ValueError) as e:
            print(f"error: {run_dir}: not a finished run ({e})", file=sys.stderr)
            return 2
    text = markdown_rows(rows)
    print(text, end="")
    if args.markdown:
        atomic.write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
