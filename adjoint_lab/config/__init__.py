"""Configuration: structured-config schemas, validation, and the config → object boundary."""

from .errors import ConfigError as ConfigError
from .schema import DistributedConfig as DistributedConfig
from .schema import ExperimentConfig as ExperimentConfig
from .schema import GradientConfig as GradientConfig
from .schema import MeshConfig as MeshConfig
from .schema import OptimConfig as OptimConfig
from .schema import SolverConfig as SolverConfig
from .schema import TrainConfig as TrainConfig
from .schema import validate as validate
from .store import compose_config as compose_config
from .store import register_configs as register_configs
from .store import to_experiment_config as to_experiment_config
