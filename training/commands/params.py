"""Print the effective parameters (params.yaml with --set applied, validated) as YAML, or the
JSON Schema of params.yaml that editors use to complete and check it.

  cyclegan params --set train.n_epochs=10     the parameters a run would use
  cyclegan params --schema params.schema.json write the schema (the serve: section's from serving/)
"""


def add_arguments(parser):
    parser.add_argument("--schema", metavar="FILE", nargs="?", const="-", default=None,
                        help="write the JSON Schema of params.yaml to FILE (- or nothing: stdout)")


def schema() -> dict:
    """params.yaml's JSON Schema: the training sections from training/config.py, the serve
    section from serving/config.py (reached by module path: the library never imports it)."""
    import importlib

    from ..config import Config

    document = Config.model_json_schema()
    serve = importlib.import_module("serving.config").ServeConfig.model_json_schema()
    document.setdefault("$defs", {}).update(serve.pop("$defs", {}))
    document["$defs"]["ServeConfig"] = serve
    document["properties"]["serve"] = {"$ref": "#/$defs/ServeConfig"}
    document["title"] = "CycleGAN pipeline parameters (params.yaml)"
    return document


def run(args):
    import importlib
    import json

    import yaml

    from ..config import config_from_dict, load_document
    from ..errors import UserError
    from ..utils import atomic_write_text

    if args.schema is not None:
        text = json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"
        if args.schema == "-":
            print(text, end="")
        else:
            atomic_write_text(args.schema, text)
            print(f"wrote {args.schema}")
        return 0
    raw, source = load_document(args.params, args.overrides, required=args.params != "params.yaml")
    cfg = config_from_dict(raw, source)
    serving = importlib.import_module("serving.config")
    try:
        serve = serving.load_serve_config(cfg.serve, source)
    except serving.ServingError as e:
        raise UserError(str(e)) from None
    print(yaml.safe_dump({**cfg.to_dict(), "serve": serve.model_dump()}, sort_keys=False), end="")
    return 0
