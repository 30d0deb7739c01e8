"""The fp16 variant of an exported generator, for GPUs: half the weight bytes and fp16
(tensor-core) convolutions behind the same interface as the fp32 model.

The converter is ONNX Runtime's own (``onnxruntime.transformers.float16``, the maintained
copy of onnxconverter-common's, installed with onnxruntime) with ``keep_io_types``: one Cast
to fp16 after the input and one back to float32 before the output, so a client sends and
receives exactly what it does with the fp32 model. Operators on the converter's default
block list (those without fp16 kernels) would stay fp32; the generators use none of them.
InstanceNormalization, Pad and ConvTranspose are converted too: keeping the norms in fp32
would put two Casts around each of them, and onnxruntime 1.31's converter then writes one
Cast output name twice (an invalid graph). Whether fp16 is good enough is measured, not
assumed: the export compares the fp16 model with the fp32 one on test images and fails
below ``export.fp16_min_psnr_db``.

The comparison runs on ONNX Runtime's CPU provider, which has fp16 kernels for every
operator these graphs use (slower than fp32 there: fp16 is for GPUs). On a GPU the CUDA and
TensorRT kernels accumulate differently, so the GPU figure may differ slightly.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

PRECISION = "float16"   # the ``precision`` metadata of the fp16 model (its inputs and outputs stay float32)


def convert_to_fp16(src: Path, dst: Path) -> None:
    """Write an fp16 copy of the ONNX model ``src`` to ``dst``, inputs and outputs kept float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")   # notes about weights clamped to the fp16 range
        half = convert_float_to_float16(model, keep_io_types=True)
    # The converter appends its Casts at the end of the node list; ONNX wants topological order.
    graph = OnnxModel(half)
    graph.topological_sort()
    onnx.save(graph.model, str(dst))
