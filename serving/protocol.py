"""The Open Inference Protocol (KServe v2) over HTTP: tensors in and out.

Request and response bodies are JSON, or JSON followed by raw tensor bytes under the
binary tensor data extension: the ``Inference-Header-Content-Length`` header gives the
JSON part's length, and each binary tensor carries ``parameters.binary_data_size``, in
the order of the tensors. tritonclient sends inputs and asks for outputs in binary by
default; both forms are accepted and returned.
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""
from __future__ import annotations

import json
import math
import zlib

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}


class ProtocolError(Exception):
    """A bad request: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def datatype(dtype) -> str:
    return NAMES[np.dtype(dtype)]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate (tritonclient's request compression) without
    letting a small compressed body expand past ``limit`` bytes."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding: {encoding!r} is not supported (gzip, deflate)", 415)
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ProtocolError(f"Content-Encoding: body is not valid {encoding} ({e})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ProtocolError(f"request body: more than serve.max_infer_bytes ({limit}) bytes once decompressed", 413)
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """(JSON header, binary tail) of an inference request."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH}: {header_length!r} is not an integer") from None
        if not 0 < n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH}: {n} is outside the body of {len(body)} bytes")
    else:
        n = len(body)
    try:
        header = json.loads(bytes(body[:n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"request body: not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ProtocolError("request body: expected a JSON object")
    return header, memoryview(body)[n:]


def decode_inputs(header: dict, tail: memoryview) -> dict[str, np.ndarray]:
    """name -> array for each entry of ``header["inputs"]``, reading binary ones from ``tail``."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("inputs: expected a non-empty list of tensors")
    offset, arrays = 0, {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{i}]: expected an object")
        name = tensor.get("name")
        where = f"inputs[{i}] ({name})" if name else f"inputs[{i}]"
        shape, dt = tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str):
            raise ProtocolError(f"{where}.name: missing")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ProtocolError(f"{where}.shape: expected a list of non-negative integers, got {shape!r}")
        if dt not in DATATYPES:
            raise ProtocolError(f"{where}.datatype: {dt!r} is not supported ({', '.join(DATATYPES)})")
        dtype = np.dtype(DATATYPES[dt])
        count = math.prod(shape)
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise ProtocolError(f"{where}.parameters.binary_data_size: {size!r} does not fit the "
                                    f"{len(tail) - offset} binary bytes left")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"{where}: {size} binary bytes for shape {shape} of {dt} "
                                    f"(expected {count * dtype.itemsize})")
            array = np.frombuffer(tail[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            if "data" not in tensor:
                raise ProtocolError(f"{where}: no data and no parameters.binary_data_size")
            try:
                array = np.asarray(tensor["data"], dtype=dtype)
            except (TypeError, ValueError, OverflowError) as e:
                raise ProtocolError(f"{where}.data: not a list of {dt} values ({e})") from None
            if array.size != count:
                raise ProtocolError(f"{where}.data: {array.size} values for shape {shape} ({count} expected)")
            array = array.reshape(shape)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # Python's json module reads NaN/Infinity (and binary tensors may carry them), but they
            # are no image, and a NaN in would come back as a literal NaN that is not JSON
            bad = np.count_nonzero(~np.isfinite(array))
            raise ProtocolError(f"{where}: {bad} of {array.size} values are NaN or Infinity (finite values only)")
        arrays[name] = array
    if offset != len(tail):
        raise ProtocolError(f"request body: {len(tail) - offset} binary bytes not claimed by any input")
    return arrays


def wants_binary(header: dict, output_name: str) -> bool:
    """Binary output if the request asked for it, per output or for all outputs."""
    for out in header.get("outputs") or []:
        if isinstance(out, dict) and out.get("name") == output_name:
            params = out.get("parameters") or {}
            if isinstance(params, dict) and "binary_data" in params:
                return bool(params["binary_data"])
    params = header.get("parameters") or {}
    return bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False


def encode_response(model_name: str, model_version: str, request_id: str | None, outputs: dict[str, np.ndarray],
                    binary: dict[str, bool]) -> tuple[bytes, dict[str, str]]:
    """(body, headers): JSON, or JSON + raw bytes with ``Inference-Header-Content-Length``."""
    entries, blobs = [], []
    for name, array in outputs.items():
        entry = {"name": name, "datatype": datatype(array.dtype), "shape": list(array.shape)}
        if binary.get(name):
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    response = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id is not None:
        response["id"] = request_id
    try:  # strict JSON: Python would write NaN/Infinity, which no JSON parser reads
        head = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        bad = [e["name"] for e in entries if "data" in e and not np.isfinite(outputs[e["name"]]).all()]
        raise ProtocolError(f"outputs[{', '.join(bad)}]: the model produced NaN or Infinity, which JSON cannot "
                            "carry (inputs far outside [-1, 1]?); ask for binary_data to get the raw values",
                            500) from None
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *blobs]), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
