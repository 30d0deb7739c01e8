"""``cyclegan export``: the generators as verified, self-describing ONNX models.

  onnx.py          export, verification against PyTorch, uint8 and int8 variants
  pyfunc_model.py  the registered MLflow model (both graphs, no torch), logged as code
"""
