"""Base models for parabolic PDEs (Xu, Hasan, Ding, Tarokh, UAI 2024; arXiv 2407.12234).

One stored bank of Brownian base paths (`BasePaths`) is re-weighted by Girsanov's theorem
for every new drift of a linear parabolic PDE in Feynman-Kac form; `feynman_kac` is the
one-call front door, with Euler-Maruyama as the direct-simulation baseline. `problems`
holds test problems with exact solutions.
"""

from . import problems as problems
from .estimate import Estimate as Estimate
from .estimate import WeightDegeneracyWarning as WeightDegeneracyWarning
from .estimate import importance_estimate as importance_estimate
from .estimate import monte_carlo_estimate as monte_carlo_estimate
from .euler_maruyama import euler_maruyama_expectation as euler_maruyama_expectation
from .girsanov import girsanov_log_weights as girsanov_log_weights
from .paths import BasePaths as BasePaths
from .paths import brownian_increments as brownian_increments
from .representation import feynman_kac as feynman_kac
