"""``cyclegan export``: the generators as verified, self-describing ONNX models.

  onnx.py          export, verification against PyTorch, uint8 and int8 variants
  quality.py       the evaluation's out-of-domain thresholds, recorded in each model's metadata
  pyfunc_model.py  the registered MLflow model (both graphs, no torch), logged as code
"""
