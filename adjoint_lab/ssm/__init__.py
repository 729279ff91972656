"""Adjoint sharding for long-context selective SSM language models (Xu et al. 2025).

```python
from flax import nnx
from adjoint_lab import ssm
model = ssm.SSMLM(ssm.SSMConfig(vocab_size=256, width=64, state_size=8, num_layers=3),
                  rngs=nnx.Rngs(0))
loss, grads = ssm.value_and_grad(model, tokens, method="adjoint")  # tokens: int [batch, T+1]
```
"""

from .api import FORMS as FORMS
from .api import LAYOUTS as LAYOUTS
from .api import METHODS as METHODS
from .api import GradientOptions as GradientOptions
from .api import default_chunk as default_chunk
from .api import gradient_function as gradient_function
from .api import value_and_grad as value_and_grad
from .config import PRESETS as PRESETS
from .config import SSMConfig as SSMConfig
from .config import count_parameters as count_parameters
from .config import preset as preset
from .model import SSMLM as SSMLM
