"""Base models for parabolic PDEs (Xu, Hasan, Ding, Tarokh, UAI 2024; arXiv 2407.12234).

One stored bank of Brownian base paths (`BasePaths`) is re-weighted by Girsanov's theorem
for every new drift of a linear parabolic PDE in Feynman-Kac form; `feynman_kac` is the
one-call front door, with Euler-Maruyama as the direct-simulation baseline and the Neural
Girsanov Operator (`NeuralGirsanovOperator`, trained with `train_ngo` over the random-basis
drift family) as the learned weight. `problems` holds test problems with exact solutions.
"""

from . import problems as problems
from .deeponet import DeepONet as DeepONet
from .drift_family import RandomBasisDrift as RandomBasisDrift
from .drift_family import SineInitial as SineInitial
from .drift_family import affine_sine_exact as affine_sine_exact
from .drift_family import sample_coefficients as sample_coefficients
from .drift_gradients import likelihood_ratio_drift_gradient as likelihood_ratio_drift_gradient
from .drift_gradients import pathwise_drift_gradient as pathwise_drift_gradient
from .estimate import Estimate as Estimate
from .estimate import WeightDegeneracyWarning as WeightDegeneracyWarning
from .estimate import importance_estimate as importance_estimate
from .estimate import monte_carlo_estimate as monte_carlo_estimate
from .euler_maruyama import euler_maruyama_expectation as euler_maruyama_expectation
from .euler_maruyama import euler_maruyama_paths as euler_maruyama_paths
from .fno import FNO as FNO
from .fno import SpectralConv as SpectralConv
from .fno import fno_parameter_count as fno_parameter_count
from .fno import parameter_count as parameter_count
from .generative import DiffusionNet as DiffusionNet
from .generative import DriftNet as DriftNet
from .generative import GenerativeCoefficients as GenerativeCoefficients
from .generative import GenerativeTask as GenerativeTask
from .generative import bits_per_dim as bits_per_dim
from .generative import elbo_is as elbo_is
from .generative import elbo_is_paths as elbo_is_paths
from .generative import fit_meta_distribution as fit_meta_distribution
from .generative import fit_meta_drift as fit_meta_drift
from .generative import sample_generative as sample_generative
from .generative import standard_normal_log_prob as standard_normal_log_prob
from .generative import train_generative_task as train_generative_task
from .girsanov import StoredPaths as StoredPaths
from .girsanov import girsanov_log_weights as girsanov_log_weights
from .girsanov import girsanov_step_terms as girsanov_step_terms
from .girsanov import log_likelihood_ratio as log_likelihood_ratio
from .ngo import NeuralGirsanovOperator as NeuralGirsanovOperator
from .ngo import ngo_expectation as ngo_expectation
from .ngo import path_features as path_features
from .ngo_training import NGOTrainingConfig as NGOTrainingConfig
from .ngo_training import train_ngo as train_ngo
from .paths import BasePaths as BasePaths
from .paths import brownian_increments as brownian_increments
from .realnvp import RealNVP as RealNVP
from .realnvp import fit_realnvp as fit_realnvp
from .representation import feynman_kac as feynman_kac
from .semilinear import SemilinearBSB as SemilinearBSB
from .semilinear import SemilinearHJB as SemilinearHJB
from .semilinear import ZNetwork as ZNetwork
from .semilinear import ZTrainingConfig as ZTrainingConfig
from .semilinear import semilinear_expectation as semilinear_expectation
from .semilinear import train_z_network as train_z_network
