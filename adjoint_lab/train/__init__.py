"""The shared training loop: state, optax, orbax checkpoints, metrics, plots, meshes, trackers."""

from .checkpoint import Checkpointer as Checkpointer
from .errors import CheckpointError as CheckpointError
from .errors import NonFiniteLossError as NonFiniteLossError
from .loop import FitResult as FitResult
from .loop import fit as fit
from .mesh import configure_host_devices as configure_host_devices
from .mesh import data_sharding as data_sharding
from .mesh import initialize_distributed as initialize_distributed
from .mesh import make_mesh as make_mesh
from .mesh import replicated as replicated
from .mesh import shard_batch as shard_batch
from .metrics import MetricsLog as MetricsLog
from .metrics import plot_curves as plot_curves
from .metrics import read_metrics as read_metrics
from .optim import make_optimizer as make_optimizer
from .optim import make_schedule as make_schedule
from .state import TrainState as TrainState
from .state import compile_unoptimized as compile_unoptimized
from .step import train_step as train_step
from .step import value_and_grad_of as value_and_grad_of
from .task import Task as Task
from .trackers import AbstractTracker as AbstractTracker
from .trackers import MissingExtraError as MissingExtraError
from .trackers import MLflowTracker as MLflowTracker
from .trackers import TensorBoardTracker as TensorBoardTracker
from .trackers import flatten_params as flatten_params
