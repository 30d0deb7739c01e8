"""Running a training: the loop, its schedule, and its state on disk.

  trainer.py     the training loop: data, steps, logs, samples, checkpoints, exact resume
  schedule.py    the learning-rate policies (linear, step, plateau, cosine)
  checkpoint.py  checkpoints: atomic writes, the kept previous one, weights_only loads, RNG state
  mirror.py      a run folder's checkpoint kept in object storage, so a retried task resumes
  import_pth.py  the authors' .pth generators turned into a checkpoint of ours
"""
