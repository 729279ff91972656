"""Linear parabolic problems in Feynman-Kac form with exact (closed-form or quadrature)
solutions, for testing and benchmarking the estimators of `adjoint_lab.parabolic`."""

from .base import AbstractProblem as AbstractProblem
from .black_scholes import BlackScholesBarenblatt as BlackScholesBarenblatt
from .black_scholes import BlackScholesCall as BlackScholesCall
from .gaussian import AffineDriftCosine as AffineDriftCosine
from .gaussian import OrnsteinUhlenbeckDensity as OrnsteinUhlenbeckDensity
from .gaussian import affine_gaussian_moments as affine_gaussian_moments
from .hjb import AbstractColeHopfHJB as AbstractColeHopfHJB
from .hjb import LogTerminalHJB as LogTerminalHJB
from .hjb import QuadraticTerminalHJB as QuadraticTerminalHJB
from .potential import HarmonicPotential as HarmonicPotential
