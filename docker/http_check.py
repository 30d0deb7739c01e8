"""The serve image's smoke client (docker/smoke.sh): waits for readiness, then translates a
PNG in both directions. Standard library only, so it runs with any python3 on the host.

    python3 docker/http_check.py URL [--timeout S] [--pid PID]

Exits 0 when /v2/health/ready answered 200 within the timeout and /v1/translate answered 200
with a PNG of the input's size for AtoB and BtoA; otherwise prints why and exits 1. With
--pid, stops waiting as soon as that process (the server) has exited.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_png(width: int, height: int) -> bytes:
    """An RGB gradient, any size (the server pads to its multiple of 4 and crops back)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # each row: filter type 0, then R, G, B per pixel
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 7 % 256, y * 9 % 256, (x + y) * 5 % 256))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError(f"not a PNG (starts {data[:16]!r})")
    return struct.unpack(">II", data[16:24])


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ready(url: str, timeout: float, pid: int | None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive(pid):
            raise RuntimeError(f"the server exited before {url}/v2/health/ready answered 200 (last: {last})")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:   # 503 while the models warm up
            last = f"HTTP {e.code}"
        except OSError as e:
            last = str(e)
        time.sleep(1)
    raise RuntimeError(f"{url}/v2/health/ready did not answer 200 within {timeout:.0f} s (last: {last})")


def translate(url: str, direction: str, width: int, height: int) -> None:
    request = urllib.request.Request(f"{url}/v1/translate?direction={direction}", data=make_png(width, height),
                                     headers={"Content-Type": "image/png"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, kind, body = response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"/v1/translate {direction}: HTTP {e.code}: {e.read()[:500]!r}") from None
    if status != 200 or kind != "image/png":
        raise RuntimeError(f"/v1/translate {direction}: HTTP {status}, Content-Type {kind}")
    got = png_size(body)
    if got != (width, height):
        raise RuntimeError(f"/v1/translate {direction}: a {got[0]}x{got[1]} PNG for a {width}x{height} input")
    print(f"/v1/translate?direction={direction}: 200, {width}x{height} PNG ({len(body)} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
    parser.add_argument("--pid", type=int, help="the server's process id: stop waiting once it has exited")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    try:
        wait_ready(url, args.timeout, args.pid)
        print(f"{url}/v2/health/ready: 200")
        for direction in ("AtoB", "BtoA"):
            translate(url, direction, 37, 26)   # odd sizes: padding and cropping back are exercised
    except (RuntimeError, ValueError) as e:
        print(f"http_check: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
