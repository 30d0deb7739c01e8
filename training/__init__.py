"""The CycleGAN library and its ``cyclegan`` command. Imports nothing of ``serving``,
``pipeline`` or ``components`` (the CLI reaches the server by module path).

  cli.py, commands/   the ``cyclegan`` entry point: parse, call one library function, report
  config.py           params.yaml as typed sections (pydantic); --params / --set
  layout.py           every file and folder name of a run, an evaluation and an export
  steps.py            each pipeline step's commands, inputs, outputs: DVC and Kubeflow read it
  storage.py          local paths and object storage (s3://, gs://, ...) behind one interface
  utils.py            hashing, atomic writes, device choice
  errors.py           UserError: the one-line error the CLI prints
  prepare/            sources, validation, synthetic data, manifest
  data/               the training-time dataset and transforms
  models/             networks (one registry of names), losses, pool, the training step
  engine/             trainer, schedule, checkpoints, checkpoint mirror, .pth import
  evaluation/         metric specs, metrics, features, KID/FD, probe, report, checkpoint selection
  export/             ONNX export and verification, the registered pyfunc
  mlops/              MLflow tracking, registry, promotion gate
  translate.py        translate files with a checkpoint
  tiling.py           large images in tiles with the whole image's instance-norm statistics
  demo_summary.py     the demo's "visibly working" verdicts
"""
