"""Published official checkpoints: a registry, and verified downloads into the cache.

Every checkpoint the authors of DITN, ESC, FMEN and EMT published is listed here under a
short name (``emt_x2_official``), with its source, licence and SHA-256. The ones whose files
could be retrieved and hashed are downloadable; the others (Google Drive folders, GitHub
release assets) are listed with ``available=False`` and their source URL so users can fetch
them by hand and pass them with ``--weights``.

Files are cached in ``lightsr.paths.cache_dir() / "weights"`` under each entry's relative
path. Set ``$LIGHTSR_WEIGHTS_URL`` to a mirror (``https://…`` or ``file:///…``) that holds the
files at ``<base>/<relative path>`` to download from there instead of the original sources.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from lightsr import __version__
from lightsr.errors import CheckpointError, DownloadError
from lightsr.paths import cache_dir, replaced_atomically

WEIGHTS_URL_ENV = "LIGHTSR_WEIGHTS_URL"
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint.

    Attributes:
        name: registry name (``"emt_x2_official"``).
        family: network family (``"emt"``).
        variant: lightsr variant that loads it (``"emt"``).
        scale: upscale factor.
        path: path relative to the weights base (cache folder or mirror), e.g.
            ``"EMT/EMT_LSR_x2.pth"``.
        url: where the authors publish the file (a pinned GitHub raw URL, or the page that
            links it when it cannot be fetched directly).
        licence: licence of the source repository.
        sha256: hex digest of the file; ``None`` when it was never retrieved.
        size: file size in bytes, when known.
        note: one line on what the checkpoint is.
    """

    name: str
    family: str
    variant: str
    scale: int
    path: str
    url: str
    licence: str
    sha256: str | None = None
    size: int | None = None
    note: str = ""

    @property
    def available(self) -> bool:
        """True when lightsr can download and verify the file."""
        return self.sha256 is not None


def _github_file(repo: str, commit: str, path: str) -> str:
    return f"https://github.com/{repo}/raw/{commit}/{path}"


_EMT = ("Fried-Rice-Lab/EMT", "MIT")
_FMEN = ("NJU-Jet/FMEN", "Apache-2.0")
_NTIRE22 = ("ofsoundof/NTIRE2022_ESR", "MIT")
_DITN = ("yongliuy/DITN", "Apache-2.0")
_DITN_COMMIT = "98352a85ab2ac19e97c86c87a2a907021c814a5d"  # history only; deleted later
_DITN_DRIVE = "https://drive.google.com/drive/folders/1XpHW27H5j2S4IH8t4lccgrgHkIjqrS-X"
_ESC_RELEASE = "https://github.com/dslisleedh/ESC/releases/tag/1.0.0"
_ESC_LICENCE = "MIT"  # declared in the repository's setup.py; no LICENSE file seen

_EMT_FILES = {  # scale: (commit that added the blob, sha256, size)
    2: (
        "c73193dcb8e1dcda492b29341b25123a25195572",
        "a0ccded9cac60a55a23bc43c08dcaef84887530ac14724f07a0c12e8a928f36e",
        3135945,
    ),
    3: (
        "45290fe6d8c31ee2c02fd9bc39a566dda648247d",
        "04991327b0eaca4f3d59b7ca7f348484d6993626051b0152443464e0d11cfcf5",
        3168393,
    ),
    4: (
        "45290fe6d8c31ee2c02fd9bc39a566dda648247d",
        "c66235c55c92bc753098372cfe6d53c8b259c302adeac48aace9b154ed9f872e",
        3213897,
    ),
}


def _emt_entries() -> list[OfficialWeights]:
    entries = []
    for scale, (commit, sha256, size) in _EMT_FILES.items():
        file = f"EMT_LSR_x{scale}.pth"
        entries.append(
            OfficialWeights(
                name=f"emt_x{scale}_official",
                family="emt",
                variant="emt",
                scale=scale,
                path=f"EMT/{file}",
                url=_github_file(_EMT[0], commit, f"modelzoo/EMT/{file}"),
                licence=_EMT[1],
                sha256=sha256,
                size=size,
                note=f"EMT lightweight SR x{scale}, DF2K, [0,255] input",
            )
        )
    return entries


def _fmen_entries() -> list[OfficialWeights]:
    return [
        OfficialWeights(
            name="fmen_s_x4_official",
            family="fmen",
            variant="fmen_s",
            scale=4,
            path="FMEN/test_weights.pt",
            url=_github_file(
                _FMEN[0], "a1def169d0e2c99ecebdb1b08bf567f329c3a566", "test_weights.pt"
            ),
            licence=_FMEN[1],
            sha256="d5534eba1feacfdd4043d9175d3bf0730b1ab4c91ba5c3f40a2282cd496fb4a5",
            size=1390163,
            note="FMEN-S x4, deploy (re-parameterised) form, [0,255] input",
        ),
        OfficialWeights(
            name="fmen_s_x4_ntire22",
            family="fmen",
            variant="fmen_s",
            scale=4,
            path="FMEN/team03_fmen.pth",
            url=_github_file(
                _NTIRE22[0], "044c9300a60595a11c4a921d335f5694187c17d0", "model_zoo/team03_fmen.pth"
            ),
            licence=_NTIRE22[1],
            sha256="f20cde0828068c5f50d3b64aa82c8a363fe6abc8d536d1a9fd4d09899f019bea",
            size=1390483,
            note="FMEN-S x4, NTIRE 2022 ESR submission (team03), deploy form",
        ),
    ]


def _ditn_entries() -> list[OfficialWeights]:
    entries = [
        OfficialWeights(
            name="ditn_real_x4_official",
            family="ditn",
            variant="ditn_real",
            scale=4,
            path="DITN/DITN_Real_x4.pth",
            url=_github_file(_DITN[0], _DITN_COMMIT, "checkpoints/DITN_Real_x4.pth"),
            licence=_DITN[1],
            sha256="989dc21e2379c6924a6bd32696df0f1fa8cfd43dd557e1ae4126b97708695b5a",
            size=1811277,
            note="DITN-Real x4, PSNR-oriented",
        ),
        OfficialWeights(
            name="ditn_real_gan_x4_official",
            family="ditn",
            variant="ditn_real",
            scale=4,
            path="DITN/DITN_Real_GAN_x4.pth",
            url=_github_file(_DITN[0], _DITN_COMMIT, "checkpoints/DITN_Real_GAN_x4.pth"),
            licence=_DITN[1],
            sha256="a103f07b5c605c2e23c23bfe44a880e10e7c019388a516f657fb13b0e7df1097",
            size=1811277,
            note="DITN-Real x4, real-world GAN model",
        ),
    ]
    # (name prefix, variant, file stem, scales) of the checkpoints on Google Drive only.
    on_drive = [
        ("ditn", "ditn", "DITN", (2, 3, 4)),
        ("ditn_tiny", "ditn_tiny", "DITN_Tiny", (2, 3, 4)),
        ("ditn_real", "ditn_real", "DITN_Real", (2, 3)),
        ("ditn_real_gan", "ditn_real", "DITN_Real_GAN", (2, 3)),
    ]
    for prefix, variant, file_stem, scales in on_drive:
        for scale in scales:
            entries.append(
                OfficialWeights(
                    name=f"{prefix}_x{scale}_official",
                    family="ditn",
                    variant=variant,
                    scale=scale,
                    path=f"DITN/{file_stem}_x{scale}.pth",
                    url=_DITN_DRIVE,
                    licence=_DITN[1],
                    note="Google Drive only",
                )
            )
    return entries


def _esc_entries() -> list[OfficialWeights]:
    # (name prefix, variant, file name pattern, scales, what it is); names from the test yamls.
    releases = [
        ("esc", "esc", "ESC_DIV2K_X{s}.pth", (2, 3, 4), "ESC, DIV2K"),
        ("esc_light", "esc_light", "ESC_light_X{s}.pth", (2, 3, 4), "ESC-light, DIV2K"),
        ("esc_fp", "esc_fp", "ESC_FP_X{s}.pth", (2, 3, 4), "ESC-FP, DIV2K"),
        ("esc_dflip", "esc", "ESC_DFLIP_X{s}.pth", (2, 3, 4), "ESC, DFLIP data"),
        ("esc_xl", "esc_xl", "ESC_XL_DF2K_X{s}_FT.pth", (2, 3, 4), "ESC-XL, DF2K"),
        ("esc_real_gan", "esc_real", "ESC_Real_X4_GAN.pth", (4,), "ESC-Real, real-world GAN"),
    ]
    return [
        OfficialWeights(
            name=f"{prefix}_x{scale}_official",
            family="esc",
            variant=variant,
            scale=scale,
            path="ESC/" + pattern.format(s=scale),
            url=_ESC_RELEASE,
            licence=_ESC_LICENCE,
            note=f"{what}; GitHub release asset",
        )
        for prefix, variant, pattern, scales, what in releases
        for scale in scales
    ]


_REGISTRY: dict[str, OfficialWeights] = {
    entry.name: entry
    for entry in (*_emt_entries(), *_fmen_entries(), *_ditn_entries(), *_esc_entries())
}


def official_weights() -> list[OfficialWeights]:
    """Every registered checkpoint, available or not, in registry order."""
    return list(_REGISTRY.values())


def official_names() -> list[str]:
    """Names of every registered checkpoint."""
    return list(_REGISTRY)


def get_official(name: str) -> OfficialWeights:
    """The registry entry ``name``.

    Raises:
        CheckpointError: no checkpoint of that name is registered.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CheckpointError(
            f"{name!r}: no such checkpoint file or published weights name (see `lightsr models`)"
        ) from None


def find_official(variant: str, scale: int) -> str | None:
    """Name of the published checkpoint for ``variant`` at ``scale``.

    The first downloadable entry wins; an entry that is known but not downloadable is
    returned when it is the only one, so that fetching it explains where to get it.
    """
    matches = [w for w in _REGISTRY.values() if w.variant == variant and w.scale == scale]
    matches.sort(key=lambda w: not w.available)
    return matches[0].name if matches else None


def weights_dir() -> Path:
    """Folder that holds downloaded weights."""
    return cache_dir() / "weights"


def cached_path(name: str) -> Path:
    """Where ``name`` is (or would be) stored in the cache."""
    return weights_dir() / get_official(name).path


def download_url(name: str) -> str:
    """URL ``name`` is downloaded from: the mirror in ``$LIGHTSR_WEIGHTS_URL`` or its source."""
    entry = get_official(name)
    base = os.environ.get(WEIGHTS_URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{entry.path}" if base else entry.url


def fetch_weights(name: str, progress: bool = True) -> Path:
    """Path of the verified local copy of published checkpoint ``name``, downloading it once.

    A cached file whose SHA-256 matches is used as is. Otherwise the file is streamed to a
    temporary file beside the target, verified, and renamed into place, so an interrupted
    or corrupt download never leaves a file behind.

    Args:
        name: a name from :func:`official_names`.
        progress: show a progress bar on stderr (only when stderr is a terminal).

    Raises:
        CheckpointError: unknown name.
        DownloadError: the checkpoint is not downloadable, the server cannot be reached,
            or the downloaded bytes do not have the registered SHA-256.
    """
    entry = get_official(name)
    if not entry.available:
        raise DownloadError(
            f"{name} cannot be downloaded automatically; get {Path(entry.path).name} from "
            f"{entry.url} and pass it with --weights"
        )
    target = weights_dir() / entry.path
    if target.is_file() and file_sha256(target) == entry.sha256:
        return target
    url = download_url(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(target) as temporary:
        with open(temporary, "wb") as out:
            digest = _stream_to(url, out, label=name, progress=progress)
        if digest != entry.sha256:
            raise DownloadError(
                f"{name}: downloaded file from {url} has SHA-256 {digest[:12]}…, "
                f"expected {entry.sha256[:12]}…; discarded it"
            )
    return target


def origin_metadata(source: str | os.PathLike) -> dict[str, str]:
    """Where a checkpoint comes from, as safetensors metadata.

    ``source_sha256`` of the file and, when that is a published checkpoint (``lightsr
    models``), its ``source_name``, ``source_url`` and ``licence``, so that converted or
    fine-tuned weights keep their provenance and terms. ``source`` is a file or a
    published name that has been fetched.
    """
    path = Path(source)
    if not path.is_file():
        path = cached_path(str(source))
    digest = file_sha256(path)
    metadata = {"source_sha256": digest}
    entry = next((w for w in _REGISTRY.values() if w.sha256 == digest), None)
    if entry is not None:
        metadata.update(source_name=entry.name, source_url=entry.url, licence=entry.licence)
    return metadata


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_to(url: str, out: BinaryIO, label: str, progress: bool) -> str:
    """Copy ``url`` into ``out``; return the SHA-256 of the bytes written."""
    request = urllib.request.Request(url, headers={"User-Agent": f"lightsr/{__version__}"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=label,
                file=sys.stderr,
                leave=False,
                disable=None if progress else True,
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {label} from {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"cannot download {label} from {url}: {reason} (offline? set {WEIGHTS_URL_ENV} "
            "to a mirror)"
        ) from None
    return digest.hexdigest()
