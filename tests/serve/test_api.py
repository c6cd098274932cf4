"""The HTTP API through httpx, against real ``lightsr serve`` processes (see conftest)."""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from lightsr.api import Upscaler
from lightsr.archs.registry import arch_specs
from lightsr.imresize import imresize
from lightsr.io import decode_image, encode_image, read_image
from tests.conftest import shared_file
from tests.serve.conftest import TIME_LIMIT_S, Server

LR = "data/Set5/LR_bicubic/X4/babyx4.png"
POLL_S = 0.1
WAIT_S = 120.0


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def lr_png() -> bytes:
    return shared_file(LR).read_bytes()


@pytest.fixture(scope="module")
def expected_png() -> bytes:
    """What ``lightsr upscale babyx4.png -o out.png`` writes (built-in model, x4)."""
    return encode_image(Upscaler()(read_image(shared_file(LR))), ".png").tobytes()


def upload(
    client: httpx.Client, data: bytes, name: str = "image.png", path="/v1/upscale", **fields
):
    files = {"image": (name, data, "application/octet-stream")}
    return client.post(path, files=files, data={k: str(v) for k, v in fields.items()})


def png(image: np.ndarray) -> bytes:
    return encode_image(image, ".png").tobytes()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["status"], error["code"]) == (status, code)
    assert error["message"] and "\n" not in error["message"]


def wait_for(client: httpx.Client, job_id: str, states: set[str]) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in states:
            return status
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} never reached {states}: {status}")


# ----------------------------------------------------------------------------- endpoints


def test_healthz_answers_without_token(server: Server):
    response = httpx.get(f"{server.url}healthz", timeout=10)
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["auth"] is True
    assert health["waiting"] >= 0 and health["running"] >= 0


def test_models_lists_served_models_and_the_catalog(client: httpx.Client):
    response = client.get("/v1/models")
    assert response.status_code == 200
    info = response.json()
    served = {m["name"]: m for m in info["served"]}
    assert info["default_model"] == "default"
    assert served["default"] == {
        "name": "default",
        "scales": [2, 3, 4],
        "default_scale": 4,
        "variant": "fmen_s",
        "label": "Default (fast; clean images)",
        "arbitrary_scale": False,
    }
    # The page's "Real photo" choice: the built-in real-world GAN model, x4 only.
    assert served["real"] == {
        "name": "real",
        "scales": [4],
        "default_scale": 4,
        "variant": "ditn_real",
        "label": "Real photo (noise, blur, JPEG)",
        "arbitrary_scale": False,
    }
    assert served["bicubic"]["variant"] == "bicubic"
    assert served["bicubic"]["label"] == "bicubic"
    # The catalog is `lightsr models --json`: every registered variant.
    assert [v["name"] for v in info["catalog"]["variants"]] == [s.name for s in arch_specs()]
    assert info["catalog"]["official_weights"]
    # The page asks for the served models alone.
    light = client.get("/v1/models", params={"catalog": "false"}).json()
    assert light["served"] == info["served"] and light["catalog"] is None


def test_upscale_answers_what_lightsr_upscale_writes(client, lr_png, expected_png):
    response = upload(client, lr_png, name="photos/babyx4.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    # The name loses its folders: nothing from a request names a path on the server.
    assert response.headers["content-disposition"] == 'attachment; filename="babyx4_x4.png"'
    assert response.content == expected_png


def test_upscale_formats(client, lr_png, expected_png):
    expected = decode_image(expected_png)
    webp = upload(client, lr_png, format="webp")
    assert webp.headers["content-type"] == "image/webp"
    np.testing.assert_array_equal(decode_image(webp.content), expected)  # lossless by default
    jpeg = upload(client, lr_png, format="jpeg", quality=90)
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert 'filename="image_x4.jpg"' in jpeg.headers["content-disposition"]
    decoded = decode_image(jpeg.content)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() < 3


def test_scale_and_bicubic(client, lr_png):
    image = decode_image(lr_png)
    x2 = upload(client, lr_png, scale=2)
    assert decode_image(x2.content).shape == (256, 256, 3)
    bicubic = upload(client, lr_png, model="bicubic", scale=3)
    np.testing.assert_array_equal(decode_image(bicubic.content), imresize(image, 3))


def test_jobs_queue_follow_and_fetch(client, lr_png, expected_png):
    response = upload(client, lr_png, path="/v1/jobs")
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["input"] == {"width": 128, "height": 128}
    done = wait_for(client, job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert done["output"] == {"width": 512, "height": 512}
    assert done["progress"]["done"] == done["progress"]["total"] >= 1
    result = client.get(done["result_url"])
    assert result.status_code == 200 and result.content == expected_png
    # Fetching again works while the result is kept; cancelling a finished job changes nothing.
    assert client.get(done["result_url"]).content == expected_png
    assert client.delete(f"/v1/jobs/{job['id']}").json()["state"] == "done"


def test_openapi_and_offline_docs(server: Server):
    schema = httpx.get(f"{server.url}openapi.json", timeout=10).json()
    for path in ("/v1/upscale", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"):
        assert path in schema["paths"]
    assert {"/v1/models", "/healthz"} <= set(schema["paths"])
    upscale = schema["paths"]["/v1/upscale"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415", "422", "503", "504"} <= set(upscale)
    docs = httpx.get(f"{server.url}docs", timeout=10).text
    assert "https://" not in docs  # the Swagger UI comes with the server, not from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in docs
        assert httpx.get(f"{server.url}static-offline-docs/{asset}").status_code == 200


def test_page_and_its_files(server: Server):
    page = httpx.get(server.url, timeout=10)
    assert page.status_code == 200 and "<title>lightsr</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert httpx.get(f"{server.url}static/{asset}", timeout=10).status_code == 200


# ----------------------------------------------------------------------------- errors


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _rgba() -> bytes:
    return png(np.full((32, 32, 4), 200, dtype=np.uint8))


# (case, file bytes or a function of the LR image, form fields, status, code)
ERRORS = [
    ("corrupt image", _truncated, {}, 400, "bad_image"),
    ("empty file", lambda _: b"", {}, 400, "bad_image"),
    ("not an image", lambda _: b"hello, server\n" * 10, {}, 415, "not_an_image"),
    (
        "too many pixels",
        lambda _: png(np.zeros((1000, 1001), np.uint8)),
        {},
        413,
        "too_many_pixels",
    ),
    ("unknown model", None, {"model": "nope"}, 422, "unknown_model"),
    ("scale not served", None, {"scale": 8}, 422, "unsupported_scale"),
    ("bad format", None, {"format": "gif"}, 422, "invalid_request"),
    ("bad quality", None, {"format": "jpeg", "quality": 0}, 422, "invalid_request"),
    ("alpha as JPEG", lambda _: _rgba(), {"format": "jpeg"}, 422, "unsupported_format"),
]


@pytest.mark.parametrize(
    ("case", "make", "fields", "status", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_documented_errors(client, lr_png, case, make, fields, status, code):
    data = lr_png if make is None else make(lr_png)
    assert_error(upload(client, data, **fields), status, code)


def test_missing_image_and_unknown_routes(client):
    assert_error(client.post("/v1/upscale", data={"model": "default"}), 422, "invalid_request")
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/v1/upscale"), 405, "method_not_allowed")
    assert_error(client.get("/v1/jobs/not-a-job"), 404, "unknown_job")
    assert_error(client.get("/v1/jobs/not-a-job/result"), 404, "unknown_job")


def test_wrong_or_missing_token(server: Server, lr_png):
    for token in (None, "wrong-token", server.token + "x"):
        with server.client(token=token) as client:
            for response in (
                client.get("/v1/models"),
                upload(client, lr_png),
                client.get("/v1/jobs/anything"),
            ):
                assert_error(response, 401, "unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"


def test_upload_limit_declared_and_streamed(client):
    big = b"\0" * (3 << 20)  # the server takes 2 MiB
    assert_error(upload(client, big), 413, "upload_too_large")
    # A chunked body declares no length: the bytes are counted as they come.
    part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    chunks = iter([part, *(b"\0" * (256 << 10) for _ in range(12))])
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    response = client.post("/v1/upscale", content=chunks, headers=headers)
    assert_error(response, 413, "upload_too_large")


def test_decompression_bomb_refused_before_decoding(server: Server, client):
    # 12000 x 12000 gray: a small file, 144 MB once decoded (and 2.3 GB upscaled x4).
    side = 12000
    raw = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    body = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    bomb = _png_file(side, side, body)
    assert len(bomb) < 1 << 20
    peak_before = _peak_rss(server)
    assert_error(upload(client, bomb), 413, "too_many_pixels")
    assert "12000x12000" in upload(client, bomb).json()["error"]["message"]
    assert _peak_rss(server) - peak_before < 50 << 20


def test_server_keeps_serving_after_bad_requests(server: Server, client, lr_png, expected_png):
    for make, fields, _, _ in ((e[1], e[2], e[3], e[4]) for e in ERRORS):
        upload(client, lr_png if make is None else make(lr_png), **fields)
    # A request cut off in the middle of its body.
    with (
        httpx.Client(base_url=server.url, timeout=10) as raw,
        pytest.raises(ConnectionAbortedError),
    ):
        raw.post(
            "/v1/upscale",
            content=_cut_off(),
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
    assert httpx.get(f"{server.url}healthz", timeout=10).status_code == 200
    assert upload(client, lr_png).content == expected_png


def _cut_off() -> Iterator[bytes]:
    yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    yield b"\x89PNG"
    raise ConnectionAbortedError("the client went away")


def _png_file(width: int, height: int, compressed: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


def _peak_rss(server: Server) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) << 10


# ----------------------------------------------------------------------------- queue, limits


def _image(side: int) -> bytes:
    rng = np.random.default_rng(side)
    return png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_queue_positions_progress_and_cancel(queue_server: Server):
    # One job of the model runs at once, one may wait; 32-pixel tiles make a 320x320 image
    # 100 slow steps (many seconds, even on a fast machine).
    with queue_server.client() as client:
        running = upload(client, _image(320), path="/v1/jobs").json()
        waiting = upload(client, _image(320), path="/v1/jobs").json()
        assert waiting["state"] == "queued" and waiting["position"] == 1
        assert_error(client.get(f"/v1/jobs/{waiting['id']}/result"), 409, "not_ready")
        full = upload(client, _image(48), path="/v1/jobs")
        assert_error(full, 503, "queue_full")
        assert full.headers["retry-after"] == "5"
        cancelled = client.delete(f"/v1/jobs/{waiting['id']}").json()
        assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        assert_error(client.get(f"/v1/jobs/{waiting['id']}/result"), 409, "cancelled")

        progress = wait_for(client, running["id"], {"running"})
        deadline = time.monotonic() + WAIT_S
        while progress["progress"]["total"] <= 1 and time.monotonic() < deadline:
            progress = client.get(f"/v1/jobs/{running['id']}").json()
        assert progress["progress"]["total"] == 100
        client.delete(f"/v1/jobs/{running['id']}")
        stopped = wait_for(client, running["id"], {"cancelled", "failed", "done"})
        assert stopped["state"] == "cancelled"
        assert stopped["progress"]["done"] < 100


def test_time_limit_and_health_meanwhile(timed_server: Server):
    health: list[int] = []
    stop = threading.Event()

    def ask_health() -> None:
        while not stop.is_set():
            health.append(httpx.get(f"{timed_server.url}healthz", timeout=5).status_code)
            time.sleep(0.2)

    watcher = threading.Thread(target=ask_health)
    watcher.start()
    try:
        with timed_server.client() as client:
            # A job that runs past the limit, and a request that waits behind it: both stop
            # at the limit (counted from submission).
            job = upload(client, _image(512), path="/v1/jobs").json()
            start = time.monotonic()
            assert_error(upload(client, _image(512)), 504, "time_limit")
            assert time.monotonic() - start < TIME_LIMIT_S + 10
            failed = wait_for(client, job["id"], {"failed", "done"})
            assert failed["error"]["code"] == "time_limit"
            # The server goes on: the model's worker is free again and takes the next job
            # (which may itself run out of time on a loaded machine: 4 s is short).
            after = upload(client, _image(32), path="/v1/jobs").json()
            assert wait_for(client, after["id"], {"done", "failed"})["progress"]["total"] == 1
    finally:
        stop.set()
        watcher.join(10)
    assert len(health) >= 5 and set(health) == {200}
