"""Characteristic Neural ODEs (Xu, Hasan, Elkhalil, Ding and Tarokh, ICLR 2023).

C-NODE models latent dynamics along the characteristics of a learned first-order PDE:
dU/ds = sum_j a_j(s, z) T^(j)(U), s in [0, 1], U(0) from the input z. Here: the map itself
(`characteristic_flow`); equinox classifiers for C-NODE and the NODE / ANODE / IL-NODE /
second-order baselines and their C-versions (images in the authors' layouts, or vectors): one
`ODEClassifier` (initial map, latent field, head, and an `adjoint_lab.core.Integrator`) and a
factory per model name (`CNODE`, `NODE`, ...); the convolution methods (`AutoConv`, `LaxConv`,
`Im2colConv`, `ShiftedMatmulConv`: one function, different speeds) and `GroupNorm`; parameter
counts and matching; the losses; and the synthetic data sets (`adjoint_lab.cnode.data`). Every
ODE solve goes through `adjoint_lab.core.solve`. The experiment tasks (`adjoint_lab.cnode.tasks`)
are built from configs and are not re-exported here.
"""

from . import data as data
from ._fields import AbstractLatentField as AbstractLatentField
from ._fields import AutonomousField as AutonomousField
from ._fields import BatchedField as BatchedField
from ._fields import CharacteristicField as CharacteristicField
from ._fields import SecondOrderField as SecondOrderField
from ._flow import characteristic_flow as characteristic_flow
from ._layers import AbstractConvMethod as AbstractConvMethod
from ._layers import AutoConv as AutoConv
from ._layers import GroupNorm as GroupNorm
from ._layers import Im2colConv as Im2colConv
from ._layers import LaxConv as LaxConv
from ._layers import ShiftedMatmulConv as ShiftedMatmulConv
from ._layers import identity as identity
from ._losses import accuracy as accuracy
from ._losses import cross_entropy as cross_entropy
from ._losses import double_softmax_cross_entropy as double_softmax_cross_entropy
from ._models import ANODE as ANODE
from ._models import CANODE as CANODE
from ._models import CILANODE as CILANODE
from ._models import CILNODE as CILNODE
from ._models import CNODE as CNODE
from ._models import ILANODE as ILANODE
from ._models import ILNODE as ILNODE
from ._models import NODE as NODE
from ._models import SONODE as SONODE
from ._models import Integrator as Integrator
from ._models import ODEClassifier as ODEClassifier
from ._params import MODELS as MODELS
from ._params import PAPER_ARCHITECTURES as PAPER_ARCHITECTURES
from ._params import count_parameters as count_parameters
from ._params import format_parameter_counts as format_parameter_counts
from ._params import matched_width as matched_width
from ._params import paper_model as paper_model
from ._params import paper_parameter_counts as paper_parameter_counts
