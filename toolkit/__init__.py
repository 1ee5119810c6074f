"""toolkit: ResNetV2 image classifiers, from image folders to parity-checked SavedModel, ONNX and TFLite exports.

The map. `config` holds the frozen settings of every command (their fields are the flags) and
`layout` every file name a run or an export writes; `cli` is the one prologue of the commands and
`flags` the trainer's flags. `common/` has what every part uses (atomic writes, log lines, exit
codes and typed errors, the machine record, plots, markdown). `data/` turns image folders, TFDS
datasets or foreign TFRecords into shards and feeds them (the one preprocessing function lives in
`data.preprocess`); `models/` builds ResNetV2. `train/` is one run (`run`: setup, fit, finish;
`session`, `steps`, `optim`, `distribute`, `checkpoint`, `ema`, `progress`, `outputs`); `export/`
writes and proves the formats (`run`, `rebuild`, `savedmodel`, `onnx`, `tflite`, `triton`, `warmup`,
`model_card`, the parity gate in `gate`, `compare` and `verify`, `record`); `infer/` loads any
exported format as a function (`loaders`) and scores files (`predict`, `prediction_files`,
`evaluate`). Layers import downward only: common < data, models < infer < export < train; the
commands (`python -m toolkit.train`, `.export`, `.parity`, `.evaluate`, `.infer`, `.data.convert`)
sit on top. ARCHITECTURE.md says where a new format or data source goes.
"""

__version__ = "0.1.0"
