"""Evaluation of a trained CycleGAN on the test split (``cyclegan evaluate``), and the choice of
the checkpoint to evaluate (``cyclegan select``).

  specs.py      every metric's name, meaning, direction, unit and gate rule (one place)
  metrics.py    pure per-image metrics: L1, PSNR, SSIM
  features.py   the pretrained feature network (EfficientNet-Lite0, offline) and its cache
  distances.py  KID and the Fréchet distance between feature sets
  probe.py      the linear domain probe (logistic regression on features)
  report.py     picture grids, the self-contained HTML report, DVC plot files
  evaluate.py   the orchestration: passes, the metrics file, atomic outputs
  select.py     which epoch checkpoint goes on: every kept epoch scored on training images
"""
