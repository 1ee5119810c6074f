"""Reports: counts checked by hand, plots written as real PNGs."""

import numpy as np
from PIL import Image

from toolkit.common import reports


def test_confusion_matrix_and_per_class_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 1, 0, 1, 1, 0])
    counts = reports.confusion_matrix(labels, preds, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    rows = {r["class"]: r for r in reports.per_class_metrics(counts, ["a", "b", "c"])}
    assert rows["a"]["precision"] == 2 / 3 and rows["a"]["recall"] == 2 / 3
    assert rows["b"]["precision"] == 2 / 3 and rows["b"]["recall"] == 1.0
    assert rows["c"]["precision"] == 0.0 and rows["c"]["recall"] == 0.0 and rows["c"]["support"] == 1


def test_epoch_curves_average_the_logged_training_losses():
    records = [
        {"kind": "train", "epoch": 1, "step": 2, "loss": 2.0, "top1": 0.25},
        {"kind": "train", "epoch": 1, "step": 4, "loss": 1.0, "top1": 0.75},
        {"kind": "val", "epoch": 1, "step": 4, "val_loss": 1.2, "val_top1": 0.5},
        {"kind": "train", "epoch": 2, "step": 6, "loss": 0.5},
        {"kind": "val", "epoch": 2, "step": 6, "val_loss": 0.8, "val_top1": 0.75},
    ]
    c = reports.epoch_curves(records)
    assert c["epoch"] == [1, 2]
    assert c["train_loss"] == [1.5, 0.5]
    assert c["train_top1"] == [0.5, None]
    assert c["val_top1"] == [0.5, 0.75]


def test_plots_are_real_pngs(tmp_path):
    records = [{"kind": "train", "epoch": e, "step": e, "loss": 1.0 / e} for e in (1, 2, 3)]
    records += [{"kind": "val", "epoch": e, "step": e, "val_loss": 1.0 / e, "val_top1": 0.3 * e} for e in (1, 2, 3)]
    paths = [
        reports.plot_curves(records, str(tmp_path / "curves.png")),
        reports.write_confusion(np.array([[3, 1], [0, 4]]), ["ants", "bees"], str(tmp_path / "cm.png"), str(tmp_path / "cm.json")),
        reports.plot_predictions(np.full((5, 16, 16, 3), 128.0), [0, 1, 0, 1, 1], [0, 1, 1, 1, 0], ["ants", "bees"],
                                 str(tmp_path / "pred.png"), probabilities=[0.9, 0.8, 0.6, 0.7, 0.55]),
    ]
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_markdown_tables_escape_a_pipe_inside_a_cell_and_format_cells():
    from toolkit.common import markdown

    lines = markdown.table(("name", "value"), [("a|b", 0.5), ("c", None)], cell=lambda v: "-" if v is None else str(v))
    assert lines == ["| name | value |", "|---|---|", "| a\\|b | 0.5 |", "| c | - |"]
