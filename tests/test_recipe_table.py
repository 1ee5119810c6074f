"""scripts/recipe_table.py on run directories written by hand: the figures are worked out below."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "recipe_table.py")
MACHINE = {"cpu": "AMD EPYC", "onednn": "on"}


def write_run(path, summary, evals, times=(100.0, 400.0)):
    os.makedirs(path)
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f)
    records = [{"kind": "train", "time": times[0], "step": 1, "epoch": 1, "loss": 1.0}]
    records += [{"kind": "val", "time": times[1], "epoch": i + 1, **e} for i, e in enumerate(evals)]
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def table(*runs):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, runs)], capture_output=True, text=True, timeout=60)
    return proc


def test_an_ema_run_is_judged_by_its_ema_weights_and_a_raw_run_by_its_raw_weights(tmp_path):
    # 12 evaluations: the EMA weights peak at epoch 3 (0.80); the last 10 (epochs 3-12) span 0.70-0.80
    ema = [0.5, 0.6, 0.8, 0.7, 0.72, 0.74, 0.71, 0.73, 0.75, 0.76, 0.77, 0.75]
    raw = [0.55, 0.9, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7]
    config = {"data": {"seed": 1, "randaugment": "2,9", "mixup_alpha": 0.0, "cutmix_alpha": 1.0, "train_sizes": "64@1,96@5"},
              "train": {"ema_decay": 0.995}}
    write_run(tmp_path / "with_ema", {
        "exported_weights": "ema", "ema_val_top1": 0.75, "val_top1": 0.7, "image_size": 96, "epochs": 12,
        "train_seconds": 1290.0, "threads": {"intra_op": 2, "inter_op": 2}, "machine": MACHINE, "precision": "bf16",
        "config": config}, [{"val_top1": r, "ema_val_top1": e} for r, e in zip(raw, ema)])
    # an older run without train_seconds: its minutes come from metrics.jsonl (100 s to 400 s: 5.0) with a ~
    # ... on a CPU whose record names its features (AVX2 only), with XLA
    write_run(tmp_path / "plain", {
        "exported_weights": "raw", "val_top1": 0.7, "image_size": 128, "epochs": 12, "threads": {"intra_op": 0, "inter_op": 0},
        "machine": {"cpu": "AMD EPYC", "onednn": "off", "cpu_features": ["avx2", "fma"]}, "precision": "fp32", "xla": True, "config": {"data": {"seed": 0}, "train": {"ema_decay": 0.0}}},
        [{"val_top1": r} for r in raw])
    # CutMix on a share of the batches says so; so does a network other than ResNet50V2
    write_run(tmp_path / "half", {
        "exported_weights": "raw", "val_top1": 0.7, "image_size": 96, "epochs": 1, "threads": {}, "machine": MACHINE,
        "precision": "bf16", "train_seconds": 60.0,
        "config": {"data": {"seed": 2, "cutmix_alpha": 1.0, "mix_prob": 0.5}, "train": {}, "model": {"depth": 26}}},
        [{"val_top1": 0.7}])
    proc = table(tmp_path / "with_ema", tmp_path / "plain", tmp_path / "half")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| run | seed | px | epochs | techniques | final val top-1 |")
    assert lines[2] == ("| with_ema | 1 | 64>96, eval 96 | 12 | EMA 0.995, RandAugment 2,9, CutMix 1 | 75.0% (raw 70.0%) | 80.0% (3) "
                        "| 70.0-80.0% | 21.5 | 2+2 | AMD EPYC, oneDNN on, bf16 |")
    assert lines[3] == "| plain | 0 | 128 | 12 | - | 70.0% | 90.0% (2) | 60.0-70.0% | ~5.0 | auto+auto | AMD EPYC (AVX2), oneDNN off, fp32, XLA |"
    assert lines[4] == "| half | 2 | 96 | 1 | ResNet26V2, CutMix 1 on 50% of batches | 70.0% | 70.0% (1) | 70.0-70.0% | 1.0 | ?+? | AMD EPYC, oneDNN on, bf16 |"


def test_a_directory_that_is_not_a_finished_run_is_named_in_one_line(tmp_path):
    os.makedirs(tmp_path / "empty")
    proc = table(tmp_path / "empty")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {tmp_path / 'empty'}: not a finished run")
    assert len(proc.stderr.strip().splitlines()) == 1
