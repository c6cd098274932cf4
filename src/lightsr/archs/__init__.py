"""Network definitions. Importing this package registers every network variant."""

from lightsr.archs.registry import (
    ArchSpec,
    Detection,
    arch_specs,
    build_model,
    get_arch,
    list_models,
    register_arch,
    register_detector,
)

__all__ = [
    "ArchSpec",
    "Detection",
    "arch_specs",
    "build_model",
    "get_arch",
    "list_models",
    "register_arch",
    "register_detector",
]

# Network modules register their variants on import.
from lightsr.archs import ditn, emt, esc, fmen  # noqa: F401
