"""Deploy (inference) form of networks that train in a different, re-parameterisable form.

A network with a training/deploy split (FMEN: RRRBs and BatchNorms) exposes a
``reparameterize()`` method on its module that returns the equivalent deploy-form module.
Everything here is generic over that convention; networks without such a method are
already in their only form.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from lightsr.errors import UsageError
from lightsr.models import SRModel, load_model, save_model


def has_deploy_form(module: nn.Module) -> bool:
    """Whether ``module`` belongs to a network with a separate, foldable deploy form."""
    return callable(getattr(module, "reparameterize", None))


def deploy_module(module: nn.Module) -> nn.Module:
    """``module`` in deploy form, in eval mode (``module`` itself when there is no split).

    The input module is left untouched when it is re-parameterised.
    """
    if has_deploy_form(module):
        module = module.reparameterize()
    return module.eval()


def reparameterize_model(model: SRModel) -> SRModel:
    """The same model in deploy form: equal outputs, plain convolutions, no BatchNorm.

    Returns ``model`` unchanged when its network has no training/deploy split.
    """
    if not has_deploy_form(model.module):
        return model
    return model.with_module(deploy_module(model.module))


def reparameterize_checkpoint(
    source: str | os.PathLike, destination: str | os.PathLike, half: bool = False
) -> SRModel:
    """Fold a training-form checkpoint and write the deploy form as safetensors.

    The file carries the model's provenance with ``form="deploy"`` (see
    :mod:`lightsr.provenance`), so :func:`lightsr.load_model` rebuilds the deploy form
    directly. A checkpoint that is already in deploy form is written unchanged.

    Args:
        source: checkpoint path or published weights name (training or deploy form).
        destination: output path ending in ``.safetensors``.
        half: store floating tensors as float16.

    Returns:
        The deploy-form model that was written.

    Raises:
        UsageError: the output name is not ``.safetensors``, or the network has no
            training/deploy split (``lightsr convert`` is the tool for those).
    """
    if Path(destination).suffix != ".safetensors":
        raise UsageError(f"{destination}: output must end in .safetensors")
    model = load_model(source)
    if not model.spec.has_deploy_form:
        raise UsageError(
            f"{model.variant} has no separate training form to fold; "
            "use `lightsr convert` to re-save it"
        )
    deployed = reparameterize_model(model)
    save_model(deployed, destination, half=half, source=Path(str(source)).name)
    return deployed
