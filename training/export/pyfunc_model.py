"""The registered model: one MLflow pyfunc carrying both ONNX generators.

Why one model and not two (``NAME-AtoB``/``NAME-BtoA``): both directions come from one
training run and are only meaningful together; one version with one ``champion`` alias moves
both at once by construction, so the aliases can never point at halves of different runs.

This file is logged as "model from code" (``mlflow.models.set_model``), so loading the model
needs MLflow, numpy and onnxruntime only: no torch, no pickled classes, no ``training``
package. The two exported graphs sit in the model's ``artifacts/`` folder under the artifact
keys ``G_AtoB`` and ``G_BtoA``; ``cyclegan serve models:/NAME@champion`` finds them there by
their metadata.

Input: float32 NCHW images in [-1, 1], any height and width: padded inside to the generator's
size multiple and minimum side (read from the graph's metadata), cropped back, by the rule of
``serving/images.py`` (which this file cannot import). Inference parameter ``direction``:
``AtoB`` (default) or ``BtoA``.
"""
import warnings

import mlflow
import numpy as np

# The signature is logged explicitly; MLflow's advice to add predict() type hints does not apply.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")


def pad_to(x: np.ndarray, multiple: int, min_size: int) -> np.ndarray:
    """Pad H and W at the end to a multiple of ``multiple`` and at least ``min_size``:
    reflection, or edge replication where a pad is not smaller than its side."""
    h, w = x.shape[2], x.shape[3]
    pad_h = max(h + (-h) % multiple, min_size) - h
    pad_w = max(w + (-w) % multiple, min_size) - w
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode=mode)


class CycleGANOnnx(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {direction: ort.InferenceSession(context.artifacts[f"G_{direction}"], options,
                                                         providers=["CPUExecutionProvider"])
                         for direction in ("AtoB", "BtoA")}
        self.shape_rules = {}
        for direction, session in self.sessions.items():
            meta = session.get_modelmeta().custom_metadata_map
            multiple = int(meta.get("size_multiple", 4))
            self.shape_rules[direction] = (multiple, int(meta.get("min_size", 2 * multiple)))

    def predict(self, context, model_input, params=None):
        direction = (params or {}).get("direction", "AtoB")
        if direction not in self.sessions:
            raise ValueError(f"direction: {direction!r} is not AtoB or BtoA")
        if isinstance(model_input, dict):
            model_input = model_input["image"]
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        h, w = x.shape[2], x.shape[3]
        x = pad_to(x, *self.shape_rules[direction])
        session = self.sessions[direction]
        y = session.run(None, {session.get_inputs()[0].name: x})[0]
        return y[:, :, :h, :w]


mlflow.models.set_model(CycleGANOnnx())
