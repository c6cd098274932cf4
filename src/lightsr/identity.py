"""Names of a model read from its registry spec, shared by every kind of loaded model.

Torch-free, so that the ONNX Runtime and NCNN models, which import torch only when they
need it, name themselves the same way as :class:`lightsr.models.SRModel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightsr.archs.registry import ArchSpec


class NamedBySpec:
    """``family`` (alias ``name``) and ``variant`` read from the ``spec`` of a model."""

    spec: ArchSpec

    @property
    def family(self) -> str:
        """Network family (``"fmen"``)."""
        return self.spec.family

    @property
    def name(self) -> str:
        """Network family (``"fmen"``); the same as :attr:`family`."""
        return self.spec.family

    @property
    def variant(self) -> str:
        """Registry name of the variant (``"fmen_s"``)."""
        return self.spec.name
