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
from .gradients import GaussAdjoint as GaussAdjoint
from .gradients import InterpolatingAdjoint as InterpolatingAdjoint
from .gradients import QuadratureAdjoint as QuadratureAdjoint
from .gradients import ReversibleAdjoint as ReversibleAdjoint
from .gradients import default_checkpoints as default_checkpoints
from .measure import MemoryReport as MemoryReport
from .measure import RSSReport as RSSReport
from .measure import TimingReport as TimingReport
from .measure import available_memory as available_memory
from .measure import compiled_memory as compiled_memory
from .measure import peak_rss as peak_rss
from .measure import time_fn as time_fn
from .ode import EvaluationCount as EvaluationCount
from .ode import Integrator as Integrator
from .ode import Solution as Solution
from .ode import count_evaluations as count_evaluations
from .ode import solve as solve

# Linear recurrences (recurrence.py): transition types, scans, adjoints, chunk scans.
from .recurrence import AbstractTransition as AbstractTransition
from .recurrence import Dense as Dense
from .recurrence import Diagonal as Diagonal
from .recurrence import adjoint_states as adjoint_states
from .recurrence import affine_scan as affine_scan
from .recurrence import associative_recurrence as associative_recurrence
from .recurrence import boundary_states as boundary_states
from .recurrence import chunked_linear_recurrence as chunked_linear_recurrence
from .recurrence import chunked_scan as chunked_scan
from .recurrence import linear_recurrence as linear_recurrence
from .recurrence import linear_recurrence_vjp as linear_recurrence_vjp
from .recurrence import sequential_recurrence as sequential_recurrence
from .recurrence import windowed_adjoint_states as windowed_adjoint_states

# Algebraically reversible solvers (reversible.py), for ReversibleAdjoint.
from .reversible import AbstractReversibleSolver as AbstractReversibleSolver
from .reversible import Reversible as Reversible
from .reversible import ReversibleHeun as ReversibleHeun

# SDE solves on stored Brownian increments (sde.py).
from .sde import BrownianIncrements as BrownianIncrements
from .sde import DiagonalDiffusion as DiagonalDiffusion
from .sde import solve_sde as solve_sde
