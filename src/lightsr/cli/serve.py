"""``lightsr serve``: an HTTP API and a web page for upscaling."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket

from lightsr.cli.runtime_options import PRECISION_HELP, print_precision_choice
from lightsr.errors import UsageError
from lightsr.options import AUTO_PRECISION, DEVICE_HELP, PRECISIONS

TOKEN_VARIABLE = "LIGHTSR_TOKEN"
LOOPBACK_NAMES = ("localhost",)

EPILOG = f"""\
Open http://HOST:PORT/ for the page, /docs for the API. Each model runs --jobs upscales at
once; the others wait in order, their place shown. Uploads over --max-upload or images over
--max-pixels (read from the header, before decoding) are refused, and so is any request
that takes over --time-limit.

The server listens on 127.0.0.1 (this machine only) unless --host says otherwise; any other
address needs a bearer token, from --token or, better (not shown by ps), ${TOKEN_VARIABLE}.
Exit status: 0 stopped cleanly, 2 usage error (bad option, port in use, unknown model).

Examples:
  lightsr serve                                   # http://127.0.0.1:8000/
  lightsr serve --model default --model emt --port 9000
  {TOKEN_VARIABLE}=s3cret lightsr serve --host 0.0.0.0
  curl -F image=@photo.jpg -o photo_x4.png http://127.0.0.1:8000/v1/upscale
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve models over HTTP, with a web page",
        description="Serve super-resolution over HTTP: a JSON API and a page to upscale "
        "images in a browser. Needs the serve extra: pip install 'lightsr[serve]'.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (%(default)s)")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to serve, as upscale --model takes it; repeat for more "
        "(default: the built-in models, default and real)",
    )
    parser.add_argument(
        "--token", help=f"bearer token for /v1 requests (default: ${TOKEN_VARIABLE})"
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="jobs per model at once")
    parser.add_argument(
        "--max-waiting", type=int, default=32, metavar="N", help="jobs that may wait (%(default)s)"
    )
    parser.add_argument(
        "--max-upload", type=int, default=32, metavar="MiB", help="request body (%(default)s MiB)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=2048 * 2048,
        metavar="N",
        help="input width × height (%(default)s)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=300.0, metavar="S", help="per request and job (300 s)"
    )
    parser.add_argument("--tile", type=int, metavar="N", help="force N×N-pixel input tiles")
    parser.add_argument(
        "--max-memory", type=int, metavar="MiB", help="memory one tile may use (default: auto)"
    )
    parser.add_argument(
        "--precision",
        default=AUTO_PRECISION,
        choices=(AUTO_PRECISION, *PRECISIONS),
        help=f"{PRECISION_HELP[AUTO_PRECISION]} [default], fp32, fp16, bf16",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--log-level", default="info", choices=("warning", "info", "debug"), help="server log"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    _check(args, token)
    listener = _listen(args.host, args.port)
    try:
        import uvicorn

        from lightsr.serve.app import Limits, create_app
        from lightsr.serve.engine import DEFAULT_SERVED, EngineOptions, ModelPool
    except ImportError as exc:
        raise UsageError(
            f"lightsr serve needs the serve extra ({exc.name} is missing): "
            "pip install 'lightsr[serve]'"
        ) from None

    options = EngineOptions(
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        max_memory=None if args.max_memory is None else args.max_memory << 20,
    )
    pool = ModelPool(args.model or DEFAULT_SERVED, options)
    pool.load_all()
    for name, scales in pool.scales.items():
        for scale in scales:
            print_precision_choice(f"serve: {name} x{scale}", pool.get(name, scale), args.verbose)
    limits = Limits(
        max_upload=args.max_upload << 20,
        max_pixels=args.max_pixels,
        time_limit=args.time_limit,
        jobs_per_model=args.jobs,
        max_waiting=args.max_waiting,
    )
    app = create_app(pool, limits, token)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    host, port = listener.getsockname()[:2]
    served = "; ".join(f"{n} " + " ".join(f"x{s}" for s in sc) for n, sc in pool.scales.items())
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    print(f"lightsr serve: {url} (API docs: {url}docs); models: {served}", flush=True)
    server.run(sockets=[listener])
    return 0


def _check(args: argparse.Namespace, token: str | None) -> None:
    for option, value, least in (
        ("--port", args.port, 0),
        ("--jobs", args.jobs, 1),
        ("--max-waiting", args.max_waiting, 0),
        ("--max-upload", args.max_upload, 1),
        ("--max-pixels", args.max_pixels, 1),
        ("--tile", args.tile, 1),
        ("--max-memory", args.max_memory, 1),
    ):
        if value is not None and value < least:
            raise UsageError(f"{option} must be at least {least}, got {value}")
    if args.port > 65535:
        raise UsageError(f"--port must be at most 65535, got {args.port}")
    if not args.time_limit > 0:
        raise UsageError(f"--time-limit must be positive, got {args.time_limit}")
    if token is None and not _is_loopback(args.host):
        raise UsageError(
            f"listening on {args.host} lets other machines in: give a bearer token "
            f"(${TOKEN_VARIABLE} or --token), or keep the default --host 127.0.0.1"
        )


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, opened before the models load so that a busy port fails fast."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from None
