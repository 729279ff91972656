"""Configuration: structured-config schemas, validation, and the ODE config → object boundary.

A leaf above `core`: composing configs against the tasks lives in the application layer
(`adjoint_lab.app.compose_config`, `register_configs`, `to_experiment_config`).
"""

from .build import build_integrator as build_integrator
from .errors import ConfigError as ConfigError
from .schema import AdjointConfig as AdjointConfig
from .schema import AdjointPaperConfig as AdjointPaperConfig
from .schema import BackpropConfig as BackpropConfig
from .schema import BacksolveConfig as BacksolveConfig
from .schema import CheckpointedConfig as CheckpointedConfig
from .schema import DirectConfig as DirectConfig
from .schema import DistributedConfig as DistributedConfig
from .schema import ExperimentConfig as ExperimentConfig
from .schema import GradientConfig as GradientConfig
from .schema import MeshConfig as MeshConfig
from .schema import OptimConfig as OptimConfig
from .schema import RematConfig as RematConfig
from .schema import ScanBackpropConfig as ScanBackpropConfig
from .schema import SolverConfig as SolverConfig
from .schema import SSMCheckpointedConfig as SSMCheckpointedConfig
from .schema import TrainConfig as TrainConfig
from .schema import TruncatedConfig as TruncatedConfig
from .schema import validate as validate
