"""Show the pipeline's step table (training/steps.py), or write the dvc.yaml generated from it.

  cyclegan steps                      each step's commands, inputs and outputs
  cyclegan steps --write dvc.yaml     regenerate dvc.yaml after changing the table
  cyclegan steps --check dvc.yaml     exit 1 when dvc.yaml and the table disagree
"""


def add_arguments(parser):
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="FILE", help="write the generated dvc.yaml to FILE")
    action.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the generated dvc.yaml")


def run(args):
    import sys
    from pathlib import Path

    from ..layout import FOLDERS
    from ..steps import DVC_OPTIONS, STEPS, dvc_yaml
    from ..utils import atomic_write_text

    if args.write:
        atomic_write_text(args.write, dvc_yaml())
        print(f"wrote {args.write}")
        return 0
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text() != dvc_yaml():
            print(f"{path}: differs from training/steps.py; regenerate it with cyclegan steps --write {path}",
                  file=sys.stderr)
            return 1
        print(f"{path}: matches training/steps.py")
        return 0
    for step in STEPS:
        print(f"{step.name}: {step.description}")
        for argv in step.argv(FOLDERS, DVC_OPTIONS):
            print("  $ " + " ".join(argv))
        print("  reads:  " + (", ".join(step.paths(step.inputs, FOLDERS)) or "-"))
        print("  writes: " + ", ".join(o.path.format(**FOLDERS) for o in step.outputs))
    return 0
