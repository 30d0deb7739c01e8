"""MLflow: one tracking run per pipeline run, the model registry and the promotion gate.

  tracking.py  the run: opened by train, each step logs its part (``cyclegan track``)
  live.py      train --track: the training log, sample grids and system metrics sent while training
  registry.py  register a version as challenger, promote to champion, roll back, status
  gate.py      the pure decision: challenger against champion and best promoted, metric by metric
  card.py      the model card: the Markdown description of a registered version
"""
