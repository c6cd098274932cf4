"""Network definitions. Importing this package registers every network variant."""

from lightsr.archs.registry import (
    ArchSpec,
    Detection,
    Reading,
    arch_specs,
    build_model,
    detect,
    get_arch,
    list_models,
    register_arch,
    register_reader,
)

__all__ = [
    "ArchSpec",
    "Detection",
    "Reading",
    "arch_specs",
    "build_model",
    "detect",
    "get_arch",
    "list_models",
    "register_arch",
    "register_reader",
]

# Network modules register their variants on import.
from lightsr.archs import ditn, emt, esc, fmen, lte  # noqa: F401
