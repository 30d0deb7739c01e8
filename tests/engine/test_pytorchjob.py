"""Structural checks of the multi-node PyTorchJob manifest (no cluster runs here)."""
import yaml

from helpers import ROOT
from training.cli import COMMANDS, build_parser

MANIFEST = ROOT / "training" / "k8s" / "pytorchjob.yaml"


def test_pytorchjob_structure_and_gpu_requests():
    job = yaml.safe_load(MANIFEST.read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    nodes = sum(spec["replicas"] for spec in replicas.values())
    for spec in replicas.values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"   # the training operator looks for this name
        gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
        args = container["args"]
        assert f"--nnodes={nodes}" in args and f"--nproc_per_node={gpus}" in args
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert mounts == {v["name"] for v in pod["volumes"]}


def test_pytorchjob_runs_a_real_cli_command_with_resume():
    job = yaml.safe_load(MANIFEST.read_text())
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        (container,) = spec["template"]["spec"]["containers"]
        args = container["args"]
        cli_args = args[args.index("training.cli") + 1:]
        assert cli_args[0] in COMMANDS and "--resume" in cli_args
        parsed = build_parser().parse_args(cli_args)   # every flag exists in the CLI
        assert parsed.command == "train" and parsed.resume
