"""Model compression and what it costs: magnitude pruning, post-training int8
quantization, knowledge distillation, and the size and latency measurements that go
with them.

Every transform returns a new model and leaves its input untouched. A
:class:`~assay.core.model.ModelWrapper` goes in, a ModelWrapper with the same bounds,
normalisation, class count and input shape comes out; a bare ``nn.Module`` gives a bare
module back.

| function | method |
|---|---|
| :func:`prune` | magnitude pruning (Han et al. 2015; structured: Li et al. 2017) |
| :func:`quantize` | post-training int8 quantization, dynamic or static (FX graph mode) |
| :func:`distill` | knowledge distillation (Hinton, Vinyals, Dean 2015) |
| :func:`model_size_bytes`, :func:`count_nonzero`, :func:`latency_ms`, :func:`sparsity` | measures |
"""

from .distillation import distill, distillation_loss
from .measure import count_nonzero, latency_ms, layer_sparsity, model_size_bytes, sparsity
from .pruning import prune
from .quantization import is_quantized, quantize

__all__ = ["count_nonzero", "distill", "distillation_loss", "is_quantized", "latency_ms",
           "layer_sparsity", "model_size_bytes", "prune", "quantize", "sparsity"]
