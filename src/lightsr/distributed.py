"""Upscale a whole dataset on a Ray cluster, resumably (``lightsr upscale DIR -o OUT --ray``).

Not to be confused with :mod:`lightsr.train.distributed`, which sets up DDP training.

The driver (the process that calls :func:`upscale_dataset`) lists the input images, local
or behind any URI that ``pyarrow.fs`` or ``fsspec`` opens (``s3://``, ``gs://``, ...), and
drops those whose output is already complete. Ray Data spreads the rest over a pool of
actors; each actor loads the model once (an :class:`~lightsr.api.Upscaler`, any backend
and precision) and reads, upscales and writes one image at a time with the same functions
as ``lightsr upscale``, so the outputs are byte-identical. The output folder is local to
the driver and every actor: on a cluster, a shared file system mounted at the same path.

Every output is written atomically (:func:`lightsr.io.write_image`): a reader sees no
file or the complete one. The driver then appends one JSON line per output to the manifest
``OUT/.lightsr-manifest.jsonl``: input, output (relative to ``OUT``), size and SHA-256. A
rerun skips outputs recorded there whose size still matches, and unrecorded outputs that
decode (written just before a crash of the driver; they are recorded then). Ray restarts an
actor that dies (a node lost, a process killed) and retries its unfinished tasks; writing
an output again is harmless, so every image still ends up written once, whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from lightsr.api import Upscaler
from lightsr.batch import format_suffix, output_name, plan_jobs
from lightsr.errors import EXIT_CLUSTER, ImageError, LightSRError, UsageError
from lightsr.io import decode_image, read_image, write_image
from lightsr.metadata import Metadata, parse_metadata, read_metadata
from lightsr.options import IMAGE_SUFFIXES, resolve_device

MANIFEST_NAME = ".lightsr-manifest.jsonl"
# Upper bound on Ray Data blocks. Each block is one actor task, the unit of retry and of
# progress, so blocks are single images up to this many; beyond it, several per block.
MAX_BLOCKS = 10_000
# Columns of the records that actors return and the manifest stores.
_RECORD_KEYS = ("input", "output", "bytes", "sha256", "error")

ResultCallback = Callable[[dict[str, Any]], None]


class ClusterError(LightSRError):
    """Ray is missing, the cluster cannot be reached, or the job failed on it."""

    exit_code = EXIT_CLUSTER


@dataclass
class DatasetReport:
    """What :func:`upscale_dataset` did: ``written`` now, ``skipped`` as already complete."""

    images: int = 0
    skipped: int = 0
    written: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    actors: int = 0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "skipped": self.skipped,
            "written": self.written,
            "failed": len(self.failures),
            "seconds": self.seconds,
            "images_per_s": self.images_per_second,
            "actors": self.actors,
            "failures": self.failures,
        }


def upscale_dataset(
    inputs: str | Sequence[str],
    output: str | os.PathLike,
    *,
    address: str | None = None,
    actors: int | None = None,
    threads_per_actor: int = 1,
    gpus_per_actor: float = 0,
    num_cpus: int | None = None,
    suffix: str | None = None,
    output_format: str | None = None,
    recursive: bool = False,
    quality: int | None = None,
    max_pixels: int | None = None,
    overwrite: bool = False,
    on_result: ResultCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    **options: Any,
) -> DatasetReport:
    """Upscale every image of ``inputs`` into the folder ``output`` on a Ray cluster.

    Resumable: images whose output is complete (see the module docs) are skipped unless
    ``overwrite``; when none is left, Ray is not even started. Outputs are named and
    written as by ``lightsr upscale`` (``<stem><suffix>.<ext>``, the input tree mirrored).

    >>> from lightsr.distributed import upscale_dataset
    >>> upscale_dataset("s3://bucket/frames", "/mnt/shared/frames_x4", address="auto")

    Args:
        inputs: local files, folders or glob patterns, or URIs of folders/files
            (``s3://bucket/prefix``, ``gs://...``, ``file:///...``).
        output: the output folder (shared by all nodes on a cluster).
        address: Ray cluster to join (``"auto"``, ``"ray://head:10001"``); ``None``
            starts Ray on this machine. When Ray is already initialised in this process,
            that instance is used.
        actors: size of the actor pool; default: the cluster's CPUs // ``threads_per_actor``
            (GPUs // ``gpus_per_actor`` when that is set).
        threads_per_actor: CPUs each actor reserves, and its torch thread count.
        gpus_per_actor: GPUs each actor reserves (with ``device="cuda"``).
        num_cpus: CPUs Ray may use when it is started here (default: all).
        suffix, output_format, recursive: as ``lightsr upscale``'s ``--suffix``,
            ``--format``, ``--recursive``.
        quality: JPEG/WebP quality, see :func:`lightsr.io.write_image`.
        max_pixels: pixel limit of :func:`lightsr.io.read_image`.
        overwrite: redo every image, complete or not.
        on_result: called on the driver with each image's record as it completes
            (``input``, ``output``, ``bytes``, ``sha256``, ``error``).
        on_start: called with the number of images left to do, before any work.
        **options: keyword arguments of :class:`~lightsr.api.Upscaler` (``model``,
            ``scale``, ``weights``, ``tile``, ``precision``, ``device``, ``backend``, ...).

    Raises:
        UsageError: bad inputs or options (checked on the driver before Ray starts).
        ClusterError: Ray is not installed, unreachable, or the job failed on it.
    """
    if threads_per_actor < 1 or (actors is not None and actors < 1) or gpus_per_actor < 0:
        raise UsageError("actors and threads per actor must be positive, GPUs >= 0")
    scale = _checked_scale(options, local=address is None)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    suffix = f"_x{options.get('outscale') or scale:g}" if suffix is None else suffix
    jobs = plan_dataset(inputs, Path(output), suffix, output_format, recursive)
    root = _manifest_folder(Path(output).absolute(), jobs)
    report = DatasetReport(images=len(jobs))
    with _Manifest(root) as manifest:
        todo = jobs if overwrite else manifest.pending(jobs)
        report.skipped = len(jobs) - len(todo)
        if on_start is not None:
            on_start(len(todo))
        if not todo:
            return report
        start = time.perf_counter()
        write = {"quality": quality, "max_pixels": max_pixels}
        with _ray_session(address, num_cpus) as ray:
            report.actors = actors or _default_actors(ray, threads_per_actor, gpus_per_actor)
            for record in _run_pool(
                ray, todo, report.actors, threads_per_actor, gpus_per_actor, options, write
            ):
                if record["error"]:
                    report.failures.append({"input": record["input"], "error": record["error"]})
                else:
                    manifest.add(record)
                    report.written += 1
                if on_result is not None:
                    on_result(record)
        report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------- planning


def plan_dataset(
    inputs: Sequence[str],
    output: Path,
    suffix: str,
    output_format: str | None = None,
    recursive: bool = False,
) -> list[tuple[str, Path]]:
    """``(input, output path)`` for every image: local inputs as :func:`lightsr.batch.plan_jobs`
    plans them, URIs listed through their file system and named by the same rule.

    Raises:
        UsageError: a missing input, an empty folder, or two images with one output.
    """
    # Absolute paths: actors on other nodes do not share the driver's working folder.
    output = output.absolute()
    local = [text for text in inputs if not _is_uri(text)]
    planned = plan_jobs(local, output, suffix, output_format, recursive) if local else []
    jobs = [(str(job.source.absolute()), job.target) for job in planned]
    output_format = format_suffix(output_format)
    for uri in (text for text in inputs if _is_uri(text)):
        for source, relative in _list_uri(uri, recursive):
            name = output_name(relative, suffix, output_format)
            jobs.append((source, output / relative.parent / name))
    targets: dict[Path, str] = {}
    for source, target in jobs:
        if target in targets:
            raise UsageError(f"{targets[target]} and {source} would both be written to {target}")
        targets[target] = source
    return jobs


def _is_uri(text: str) -> bool:
    return "://" in text


def _filesystem(uri: str) -> tuple[Any, str]:
    """The ``pyarrow.fs`` file system of ``uri`` and the path on it (fsspec as fallback)."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        pass
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"{uri}: unknown file system (pip install fsspec?)") from None
    filesystem, path = fsspec.core.url_to_fs(uri)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(filesystem)), path


def _list_uri(uri: str, recursive: bool) -> list[tuple[str, PurePosixPath]]:
    """Images at ``uri`` (a file, or a folder's images) as ``(uri, relative path)``."""
    import pyarrow.fs

    filesystem, base = _filesystem(uri)
    info = filesystem.get_file_info(base)
    if info.type == pyarrow.fs.FileType.File:
        return [(uri, PurePosixPath(info.base_name))]
    if info.type != pyarrow.fs.FileType.Directory:
        raise UsageError(f"{uri}: no such file or folder")
    scheme = uri.split("://", 1)[0] + "://"
    found = []
    for entry in filesystem.get_file_info(pyarrow.fs.FileSelector(base, recursive=recursive)):
        relative = PurePosixPath(entry.path).relative_to(base.rstrip("/") or "/")
        # Hidden files are skipped as in local folders: other programs' partial writes.
        if entry.type == pyarrow.fs.FileType.File and _is_image_name(relative):
            found.append((scheme + entry.path, relative))
    if not found:
        raise UsageError(f"{uri}: no images in this folder (use --recursive?)")
    return sorted(found)


def _is_image_name(relative: PurePosixPath) -> bool:
    hidden = any(part.startswith(".") for part in relative.parts)
    return relative.suffix.lower() in IMAGE_SUFFIXES and not hidden


def _checked_scale(options: dict[str, Any], local: bool) -> int:
    """Check the model options on the driver and return the scale outputs are named by.

    Loading the model here turns a typo into a :class:`UsageError` before Ray starts, and
    tells the scale of ``weights`` given without one. It loads on the CPU, since a
    cluster's driver (its head node) may have no GPU; Ray started here (``local``) runs on
    this machine's devices, so the device is checked too.
    """
    probe = dict(options)
    if probe.get("backend", "torch") == "torch":  # onnxruntime checks its device itself
        if local:
            resolve_device(probe.get("device", "auto"))
        probe["device"] = "cpu"
    return Upscaler(**probe).scale


def _manifest_folder(output: Path, jobs: Sequence[tuple[str, Path]]) -> Path:
    """``output``, or its parent when a single input is written to the file ``output``."""
    return output.parent if len(jobs) == 1 and jobs[0][1] == output else output


# ----------------------------------------------------------------------------- manifest


class _Manifest:
    """The JSON-lines record of complete outputs in ``folder``; only the driver writes it.

    Lines are appended whole and flushed one by one, so a killed driver leaves at most a
    partial last line, which reading ignores.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        self.sizes: dict[str, int] = {}  # recorded outputs (relative paths) and their sizes
        self.file: Any = None

    def __enter__(self) -> _Manifest:
        text = self.path.read_text() if self.path.exists() else ""
        for line in text.splitlines():
            try:
                record = json.loads(line)
                self.sizes[record["output"]] = int(record["bytes"])
            except (json.JSONDecodeError, TypeError, KeyError, ValueError):
                continue  # a line cut short by a killed driver
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")  # closed in __exit__
        if text and not text.endswith("\n"):
            self.file.write("\n")  # end a cut-short line, so the next record is whole
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()

    def pending(self, jobs: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
        """The jobs whose output is not complete; unrecorded complete outputs get recorded."""
        todo = []
        for source, target in jobs:
            size = self.sizes.get(self._key(target))
            if size is not None:
                done = _size(target) == size
            else:
                done = _decodes(target)
                if done:
                    self.add(_output_record(source, target))
            if not done:
                todo.append((source, target))
        return todo

    def add(self, record: dict[str, Any]) -> None:
        line = {**record, "output": self._key(Path(record["output"]))}
        del line["error"]
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def _key(self, target: Path) -> str:
        return str(target.relative_to(self.folder))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _decodes(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        read_image(path)
    except ImageError:
        return False
    return True


def _output_record(source: str, target: Path, error: str = "") -> dict[str, Any]:
    data = b"" if error else target.read_bytes()
    return {
        "input": source,
        "output": str(target),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest() if data else "",
        "error": error,
    }


# ----------------------------------------------------------------------------- Ray


@contextmanager
def _ray_session(address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """The ``ray`` module, connected; Ray is shut down afterwards if it was started here."""
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed; pip install 'lightsr[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address or "local",
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot start or join Ray at {address or 'local'}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _default_actors(ray: Any, threads: int, gpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // threads))


def _run_pool(
    ray: Any,
    jobs: Sequence[tuple[str, Path]],
    actors: int,
    threads: int,
    gpus: float,
    options: dict[str, Any],
    write: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """Run ``jobs`` on a pool of :class:`_UpscaleActor` and yield each record as it ends."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows its own, per image
    context.print_on_execution_start = False
    # Failures come back as one exception, which the caller reports; not as log lines.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    rows = [{"input": source, "output": str(target)} for source, target in jobs]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
    results = dataset.map_batches(
        _UpscaleActor,
        fn_constructor_kwargs={"options": {**options, "threads": threads}, **write},
        batch_size=1,
        batch_format="numpy",
        # Ray Data restarts a dead actor and retries its tasks however often
        # (max_restarts=-1, max_task_retries=-1): exactly-once output relies on it.
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=gpus or None,
    )
    try:
        for row in results.iter_rows():
            yield {key: _plain(row[key]) for key in _RECORD_KEYS}
    except ray.exceptions.RayError as exc:
        raise _cluster_error(exc) from exc


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _cluster_error(exc: BaseException) -> LightSRError:
    """The lightsr error behind a Ray failure (an actor's bad option), or a one-line one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, LightSRError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    # An actor's failed start keeps only the text of its error: its last line.
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = re.sub(r"^lightsr\.errors\.\w+: ", "", lines[-1]) if lines else type(exc).__name__
    return ClusterError(f"the Ray job failed: {last}")


class _UpscaleActor:
    """One Ray actor: loads the model once, then upscales the images of each batch."""

    def __init__(
        self, options: dict[str, Any], quality: int | None, max_pixels: int | None
    ) -> None:
        self.upscaler = Upscaler(**options)
        self.quality = quality
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        records = [
            self.upscale(str(source), Path(str(target)))
            for source, target in zip(batch["input"], batch["output"], strict=True)
        ]
        return {key: [record[key] for record in records] for key in _RECORD_KEYS}

    def upscale(self, source: str, target: Path) -> dict[str, Any]:
        """Read, upscale and write one image; a bad image is a record with an error."""
        try:
            image, metadata = _read(source, self.max_pixels)
            output = self.upscaler(image)
            del image
            write_image(target, output, self.quality, metadata)
        except ImageError as exc:
            message = str(exc) if source in str(exc) else f"{source}: {exc}"
            return _output_record(source, target, message)
        except (MemoryError, torch.OutOfMemoryError):
            return _output_record(source, target, f"{source}: out of memory; try a smaller tile")
        return _output_record(source, target)


def _read(source: str, max_pixels: int | None) -> tuple[np.ndarray, Metadata]:
    """The image and the metadata that ``lightsr upscale`` carries over to its output."""
    if not _is_uri(source):
        return read_image(source, max_pixels), read_metadata(source)
    filesystem, path = _filesystem(source)
    try:
        with filesystem.open_input_stream(path) as stream:
            data = stream.readall()
    except OSError as exc:
        raise ImageError(f"{source}: cannot read ({exc})") from exc
    return decode_image(data, source, max_pixels), parse_metadata(data)


__all__ = ["MANIFEST_NAME", "ClusterError", "DatasetReport", "plan_dataset", "upscale_dataset"]
