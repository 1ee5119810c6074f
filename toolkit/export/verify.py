"""Re-running the parity gate on an existing export (python -m toolkit.parity): after copying an
export, or touching it, its parity.json and export.json are brought up to date. An export on
object storage (gs://, ram://) is checked in a local copy (onnxruntime and LiteRT read local files),
and the files the check rewrote are copied back, export.json last."""

from __future__ import annotations

import json
import os
import time

from toolkit import layout
from toolkit.common import atomic, storage
from toolkit.common.messages import one_line
from toolkit.config import ExportConfig
from toolkit.export import compare as parity_gate
from toolkit.export import extras as deploy
from toolkit.export import gate as export_gate
from toolkit.export.rebuild import read_run, rebuild_float32, run_data
from toolkit.export.record import ExportError, check_settings, result, set_status


def _run_beside(export_dir: str, export_record: dict) -> str:
    """The training directory an export sits in (the default place: <model_dir>/export); the export
    names its run by folder name only, so one copied elsewhere needs --model_dir."""
    parent = storage.parent(export_dir)
    if layout.has_run_record(parent):
        return parent
    raise ExportError(f"--model_dir: {export_dir} was exported from the run {export_record.get('model_dir', '?')!r} (named, "
                      f"not located: exports carry no paths of the training machine) and its parent folder holds no "
                      f"{layout.RUN_RECORD}; pass --model_dir")


def verify_export(export_dir: str, model_dir: str | None = None, parity_images: int = 0, atol: float = 1e-4,
                  data_dir: str | None = None, log=print) -> dict:
    """Re-run the parity gate on an existing export; rewrites its parity.json and export.json status.

    Args:
      export_dir: an export written by `export_model` (possibly copied elsewhere since).
      model_dir: the training directory to compare with; None: the one the export sits in (<model_dir>/export).
      parity_images: validation images compared (0: all).
      atol: the largest absolute difference of probabilities allowed.
      data_dir: overrides the run's data (where the validation images are).
      log: called with each progress line.

    Returns:
      As `export_model`; `passed` False when the gate fails (no ParityError here).

    Raises:
      ExportError: bad input (an incomplete export, a missing training directory).
    """
    check_settings(ExportConfig(parity_images=parity_images, parity_atol=atol))
    path = os.path.join(export_dir, layout.EXPORT_RECORD)
    export_record = _read_record(path)
    if not storage.is_local(export_dir):
        return _verify_remote(export_dir, model_dir or _run_beside(export_dir, export_record),
                              dict(parity_images=parity_images, atol=atol, data_dir=data_dir, log=log))
    paths = export_gate.model_files(export_dir, export_record.get("artifacts", {}))
    paths.setdefault("onnx", os.path.join(export_dir, layout.ONNX_FILES["onnx"]))
    for needed in (os.path.join(export_dir, layout.SAVED_MODEL), *paths.values()):
        if not os.path.exists(needed):
            raise ExportError(f"--export_dir: {needed} is missing; is {export_dir} a complete export?")
    model_dir = model_dir or _run_beside(export_dir, export_record)
    record = read_run(model_dir)
    info = run_data(record, data_dir)
    model, _ = rebuild_float32(model_dir, record)
    onnx_layout = export_record.get("onnx", {}).get("layout", "nhwc")
    report = export_gate.gate(model, os.path.join(export_dir, layout.SAVED_MODEL), paths, onnx_layout, record, info, parity_images, atol)
    atomic.write_json(os.path.join(export_dir, layout.PARITY_REPORT), report)
    deploy.refresh_triton(export_dir, export_record, paths["onnx"])
    set_status(export_record, report)
    export_record.update(verified=time.strftime("%Y-%m-%dT%H:%M:%S%z"), formats=export_gate.format_results(report, deploy.format_files(paths)))
    if "model_card" in export_record.get("artifacts", {}):
        deploy.write_model_card(export_dir, export_record, model_dir)
    atomic.write_json(path, export_record)
    for line in parity_gate.summary_lines(report):
        log(line)
    log(f"parity: {export_record['status']} for {export_dir}")
    return result(os.path.abspath(export_dir), export_record, report)


def _read_record(path: str) -> dict:
    try:
        with storage.open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"--export_dir: cannot read {path}: {one_line(e)}") from e
    except Exception as e:  # noqa: BLE001 - gfile's own errors (a missing file on gs://, ram://)
        if type(e).__module__.startswith("tensorflow"):
            raise ExportError(f"--export_dir: cannot read {path}: {one_line(e)}") from e
        raise


def _verify_remote(export_dir: str, model_dir: str, options: dict) -> dict:
    """verify_export on a local copy of an export on object storage; the files it rewrote go back."""
    remote = export_dir.rstrip("/")
    with storage.local_copy(remote) as local:
        before = _digests(local)
        outcome = verify_export(local, model_dir, **options)
        changed = sorted((rel for rel, d in _digests(local).items() if before.get(rel) != d),
                         key=lambda rel: rel == layout.EXPORT_RECORD)
        for rel in changed:
            atomic.upload(os.path.join(local, rel), f"{remote}/{rel}")
        paths = {k: remote + v[len(local):] if v.startswith(local) else v for k, v in outcome["paths"].items()}
    return {**outcome, "export_dir": remote, "paths": paths}


def _digests(root: str) -> dict:
    """{path relative to root, with /: (length, sha256)} of every file below a local folder."""
    return {os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/"): storage.digest(os.path.join(d, n))
            for d, _, names in os.walk(root) for n in names}
