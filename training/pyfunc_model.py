"""The registered model: one MLflow pyfunc carrying both ONNX generators.

Why one model and not two (``NAME-AtoB``/``NAME-BtoA``): both directions come from one
training run and are only meaningful together; one version with one ``champion`` alias moves
both at once by construction, so the aliases can never point at halves of different runs.

This file is logged as "model from code" (``mlflow.models.set_model``), so loading the model
needs MLflow, numpy and onnxruntime only: no torch, no pickled classes, no ``training``
package. The graphs sit in the model's ``artifacts/`` folder as ``G_AtoB.onnx`` and
``G_BtoA.onnx``, which is also where ``cyclegan serve models:/NAME@champion`` finds them.

Input: float32 NCHW images in [-1, 1], any height and width (reflect-padded to a multiple of
4 inside, cropped back). Inference parameter ``direction``: ``AtoB`` (default) or ``BtoA``.
"""
import warnings

import mlflow
import numpy as np

# The signature is logged explicitly; MLflow's advice to add predict() type hints does not apply.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")

MULTIPLE = 4  # two stride-2 downsamplings in the ResNet generator


class CycleGANOnnx(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {direction: ort.InferenceSession(context.artifacts[f"G_{direction}"], options,
                                                         providers=["CPUExecutionProvider"])
                         for direction in ("AtoB", "BtoA")}

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
        pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
        session = self.sessions[direction]
        y = session.run(None, {session.get_inputs()[0].name: x})[0]
        return y[:, :, :h, :w]


mlflow.models.set_model(CycleGANOnnx())
