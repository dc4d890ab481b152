"""Step 1, personalize: neural CATE models that predict each customer's profit at any treatment.

``TARNet`` and ``DragonNet`` learn one outcome head per experimental arm on a shared representation;
``predict_profit(X, T)`` extends the per-arm predictions to any treatments T with the linear
interpolation operator of ``ArmGrid`` (coarse_gpu.models.interpolate).
"""
from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.dragonnet import DragonNet
from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.models.tarnet import TARNet

__all__ = ["ArmGrid", "DragonNet", "PerArmCATEModel", "TARNet"]
