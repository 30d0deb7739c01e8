"""Serving the exported generators with ONNX Runtime: no torch, nothing of the training package.

  cli.py          what `cyclegan serve` and `cyclegan translate --model` run (one-line errors)
  config.py       the serve: section of params.yaml (pydantic), validated here
  errors.py       ServingError: the one-line error, or a 4xx over HTTP
  model_store.py  an .onnx file, an export folder or models:/NAME@ALIAS -> the two generators,
                  recognised by their ONNX metadata (direction, variant)
  session.py      an ONNX Runtime session per generator: providers, padding, warm-up
  images.py       images <-> arrays, the padding rule, EXIF orientation
  batching.py     dynamic batching of requests of the same shape
  protocol.py     the Open Inference Protocol v2 (JSON and binary tensors)
  app.py          the HTTP routes: /v2, /v1/translate, the web page, /metrics
  connections.py  header/body read deadlines and a connection cap under uvicorn
  server.py       resolve, load, warm up, serve; graceful shutdown
  translate.py    translate files with an exported generator
  metrics.py, logs.py   Prometheus metrics, structured logs
  static/         the web page; k8s/ the Deployment and InferenceService manifests
"""
