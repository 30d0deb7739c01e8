"""The Kubeflow pipeline: its graph and how it runs.

  pipeline.py  the graph: fingerprint -> prepare -> train -> select -> evaluate -> export -> register, the
               tasks' placement (GPU node, requests, secret), retries and caching; compile
  sweep.py     the sweep: ParallelFor over variants (train + evaluate), the lowest KID exported
               and registered; compile
  run.py       run either here with kfp.local, submit one run or schedule recurring runs on a server
The components it wires are in components/; their commands come from training/steps.py.
"""
