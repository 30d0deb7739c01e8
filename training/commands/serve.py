"""Serve exported generators over the Open Inference Protocol (v2), an image endpoint and a web page.

MODEL is an .onnx file, an export folder, or a registered version: models:/NAME@ALIAS
(e.g. models:/cyclegan@champion) or models:/NAME/VERSION (MLflow tracking URI from
MLFLOW_TRACKING_URI, else register.tracking_uri). Models are served as
<serve.model_name>-AtoB and -BtoA. Settings come from the serve: section of params.yaml.
"""


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="FILE.onnx | EXPORT_DIR | models:/NAME@ALIAS | models:/NAME/VERSION")
    parser.add_argument("--host", default=None, help="address to bind (default serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default serve.port, 8080)")
    parser.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default=None,
                        help="ONNX Runtime execution provider (default serve.provider); a missing GPU provider is an error")


def run(args):
    import importlib
    import os

    from .args import load_args_config

    for key in ("host", "port", "provider"):
        if getattr(args, key) is not None:
            args.overrides.append(f"serve.{key}={getattr(args, key)}")
    cfg = load_args_config(args)
    # serving is its own deployable (no torch, no training package): reached by module path
    serving_cli = importlib.import_module("serving.cli")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.register.tracking_uri
    return serving_cli.serve(args.model, serve_section(cfg), tracking_uri, args.params)


def serve_section(cfg) -> dict:
    """The serve: section with serve.threads 0 resolved to the CPUs this process may really use
    (ONNX Runtime's own default counts every core of the host, even in a pod with a CPU limit)."""
    from ..utils import usable_cpus

    section = dict(cfg.serve)
    if not section.get("threads"):
        section["threads"] = usable_cpus()
    return section
