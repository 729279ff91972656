"""The application layer: composing configs for a run and building its objects.

It sits above every subpackage (`core` <- `data`, `train` <- `ssm`, `cnode`, `parabolic` <-
`tasks`, `app`): it may import any of them, and none of them imports it.
"""

from .build import build_ssm_method as build_ssm_method
from .build import build_task as build_task
from .build import build_trackers as build_trackers
from .compose import CONFIG_DIR as CONFIG_DIR
from .compose import CONFIG_MODULE as CONFIG_MODULE
from .compose import compose_config as compose_config
from .compose import composition_error as composition_error
from .compose import missing_plugin as missing_plugin
from .compose import register_configs as register_configs
from .compose import to_experiment_config as to_experiment_config
from .summary import SweepSummary as SweepSummary
from .summary import read_sweep as read_sweep
from .summary import write_summary as write_summary
