"""The shared ODE/adjoint core: solves, gradient methods, checks and measurements.

Depends on jax, diffrax and equinox only.
"""

# ODE solves, gradient methods, checks and measurements.
from .checks import assert_tree_allclose as assert_tree_allclose
from .checks import finite_difference_grad as finite_difference_grad
from .checks import relative_error as relative_error
from .checks import tree_allclose as tree_allclose
from .gradients import AbstractGradientMethod as AbstractGradientMethod
from .gradients import BacksolveAdjoint as BacksolveAdjoint
from .gradients import CheckpointedBackprop as CheckpointedBackprop
from .gradients import DirectBackprop as DirectBackprop
from .gradients import default_checkpoints as default_checkpoints
from .measure import MemoryReport as MemoryReport
from .measure import RSSReport as RSSReport
from .measure import TimingReport as TimingReport
from .measure import compiled_memory as compiled_memory
from .measure import peak_rss as peak_rss
from .measure import time_fn as time_fn
from .ode import EvaluationCount as EvaluationCount
from .ode import Solution as Solution
from .ode import count_evaluations as count_evaluations
from .ode import solve as solve

# Linear recurrences (recurrence.py) are re-exported below.
