"""Adjoint sharding for long-context selective SSM language models (Xu et al. 2025).

```python
from flax import nnx
from adjoint_lab import ssm
model = ssm.SSMLM(ssm.SSMConfig(vocab_size=256, width=64, state_size=8, num_layers=3),
                  rngs=nnx.Rngs(0))
loss, grads = ssm.value_and_grad(model, tokens, ssm.Adjoint())  # tokens: int [batch, T+1]
loss, grads = ssm.value_and_grad(model, tokens, ssm.Adjoint(schedule=ssm.StoredStreams()))
loss, grads = ssm.value_and_grad(model, tokens, "truncated", window=8)  # by name
```
"""

# Entry points, gradient methods and device layouts; and, for experiments on the methods
# themselves, their building blocks (layer_backward_literal, backprop_loss, prepare_tokens,
# rms_norm).
from .adjoint import layer_backward_literal as layer_backward_literal
from .api import FORMS as FORMS
from .api import LAYOUTS as LAYOUTS
from .api import METHODS as METHODS
from .api import gradient_function as gradient_function
from .api import value_and_grad as value_and_grad
from .autodiff import backprop_loss as backprop_loss
from .config import PRESETS as PRESETS
from .config import SSMConfig as SSMConfig
from .config import count_parameters as count_parameters
from .config import preset as preset
from .evaluate import evaluation_function as evaluation_function
from .layouts import AbstractLayout as AbstractLayout
from .layouts import LayerLayout as LayerLayout
from .layouts import LayerSequenceLayout as LayerSequenceLayout
from .layouts import SequenceLayout as SequenceLayout
from .layouts import layer_shardings as layer_shardings
from .methods import AbstractSSMGradient as AbstractSSMGradient
from .methods import Adjoint as Adjoint
from .methods import AdjointPaper as AdjointPaper
from .methods import Backprop as Backprop
from .methods import Checkpointed as Checkpointed
from .methods import Remat as Remat
from .methods import ScanBackprop as ScanBackprop
from .methods import Truncated as Truncated
from .methods import gradient_method as gradient_method
from .model import SSMLM as SSMLM
from .model import rms_norm as rms_norm
from .schedule import AbstractAdjointSchedule as AbstractAdjointSchedule
from .schedule import Chunkwise as Chunkwise
from .schedule import StoredStreams as StoredStreams
from .tokens import default_chunk as default_chunk
from .tokens import prepare_tokens as prepare_tokens
