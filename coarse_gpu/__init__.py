"""coarse_gpu: coarse personalization (Zhang & Misra, arXiv 2204.05793) on GPU.

Step 1 (personalize): ``coarse_gpu.models`` estimates each customer's profit pi_i(t).
Step 2 (discretize):  ``coarse_gpu.discretize`` chooses K treatments and who gets which.
Around them: ``coarse_gpu.policy`` (baselines), ``coarse_gpu.evaluate`` (oracle and doubly robust
values), ``coarse_gpu.experiment`` (Hydra-configured runs, reports, logging).
``CoarsePersonalizer`` (coarse_gpu.api) runs both steps from Python in one call.
"""
__version__ = "0.1.0"
__all__ = ["CoarsePersonalizer"]


def __getattr__(name):  # lazy: ``import coarse_gpu`` stays light (no torch until the API is used)
    if name == "CoarsePersonalizer":
        from coarse_gpu.api import CoarsePersonalizer  # here: the API loads torch, the package does not

        return CoarsePersonalizer
    raise AttributeError(f"module 'coarse_gpu' has no attribute {name!r}")
