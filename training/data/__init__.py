"""The training-time data: what the trainer reads from a prepared folder.

  dataset.py     the unaligned dataset (A shuffled, B random) and the epoch sampler
  transforms.py  the authors' preprocess modes, flips, tensors <-> images
"""
