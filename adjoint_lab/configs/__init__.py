"""The Hydra config tree (`config.yaml` and one folder per group), shipped as package data.

Not code: Hydra reads it as `pkg://adjoint_lab.configs`, so it is found the same way from an
editable install, a wheel, or a checkout.
"""
