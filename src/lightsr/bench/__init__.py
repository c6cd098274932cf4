"""Benchmark engine: size, compute, latency and memory of the registered networks.

Every number describes the network as it is deployed: a network with a separate training
form (FMEN) is re-parameterised first, and weights are freshly initialised (seed 0), which
changes neither the counts nor the speed.

Complexity, per forward pass on one ``1×3×H×W`` input:

* ``params``: trainable parameters (fixed masks and BN statistics excluded).
* ``macs``: multiply-accumulates of convolutions and matrix products, attention included,
  as the papers count them; ``flops`` = 2 × ``macs``. Both come from
  :class:`torch.utils.flop_counter.FlopCounterMode`, taught the CPU kernel of
  ``scaled_dot_product_attention`` that it does not know. Where lightsr replaces a
  fixed-kernel convolution of the official code by copies (EMT's one-hot shifts), the module
  says so with a ``reference_macs(input)`` method and those multiply-adds are added, so
  ``macs`` matches the published figures; ``macs_executed`` leaves them out.
* ``activations``: elements output by all ``nn.Conv2d`` calls; ``convs``: ``nn.Conv2d``
  layers. These follow the NTIRE efficient-SR challenge definitions.

Speed and memory, by protocol:

* ``robust`` (default): each network runs in a fresh subprocess with pinned torch threads,
  under :func:`torch.inference_mode`. It is primed on a small input, warmed up, then timed
  ``runs`` times on one input; the median and the min–max range are reported.
* ``ntire``: the NTIRE efficient-SR challenge procedure, for comparison with its tables:
  fp32, no warm-up, one timed forward per image over ``runs`` different images, averaged.

The torch backend runs each network's fast inference path (gradients off, in its
:func:`~lightsr.archs.blocks.to_inference_layout` layout). With ``compile``, the network goes
through ``torch.compile`` (default mode) first; its first forward at the benchmark size,
which compiles it, is reported as ``compile_s`` and replaces the small priming forward.
That full-size forward runs before the memory probe starts, so the allocator may already
hold some of the memory the timed forwards need: peak memory under ``compile`` can read low.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (weights and input included, as
the papers report it). On the CPU it is the rise of the process's resident memory (peak RSS)
during the warm-up and timed forwards over the resident memory after the model and inputs
were built, so it measures what the forward itself needs (meaningful in a fresh process).
"""

from lightsr.bench.complexity import Complexity, count_complexity, count_params, flop_counter
from lightsr.bench.memory import MemoryProbe
from lightsr.bench.protocol import (
    deploy_form,
    failed_row,
    machine_info,
    measure_network,
    pin_threads,
    run_bench,
    select_models,
)
from lightsr.bench.settings import (
    BenchRow,
    BenchSettings,
    settings_from_json,
)

__all__ = [
    "BenchRow",
    "BenchSettings",
    "Complexity",
    "MemoryProbe",
    "count_complexity",
    "count_params",
    "deploy_form",
    "failed_row",
    "flop_counter",
    "machine_info",
    "measure_network",
    "pin_threads",
    "run_bench",
    "select_models",
    "settings_from_json",
]
