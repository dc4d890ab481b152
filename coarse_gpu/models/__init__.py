"""Step 1, personalize: neural CATE models that predict each customer's profit at any treatment.

``TARNet`` and ``DragonNet`` learn one outcome head per experimental arm on a shared representation;
``predict_profit(X, T)`` extends the per-arm predictions to any treatments T with the linear
interpolation operator of ``ArmGrid`` (coarse_gpu.models.interpolate).
``DoseLogit`` (structured economic logit head) and ``DoseVC`` (varying-coefficient spline head) take
the treatment into the head and answer at any t directly (coarse_gpu.models.dose).
``CrossFitted`` gives out-of-fold predictions and seed/fold ensembles with a spread
(coarse_gpu.models.crossfit); ``aipw_scores`` the doubly robust pseudo-outcomes per customer and arm
(coarse_gpu.models.scores).
"""
from coarse_gpu.models.arm_means import ArmMeans
from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.boosting import DRLearner, GBSLearner, GBTLearner
from coarse_gpu.models.crossfit import CrossFitted
from coarse_gpu.models.dose import DoseLogit, DoseResponseModel, DoseVC
from coarse_gpu.models.dragonnet import DragonNet
from coarse_gpu.models.gb_dose import GBSDose
from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.models.scores import aipw_scores, model_aipw_scores
from coarse_gpu.models.select import AutoCATE, Blend
from coarse_gpu.models.serialize import register
from coarse_gpu.models.tarnet import TARNet
from coarse_gpu.models.twopart import TwoPart

register(TARNet, DragonNet, DoseLogit, DoseVC, GBSLearner, GBTLearner, DRLearner, CrossFitted, AutoCATE, Blend,
         ArmMeans, TwoPart, GBSDose)

__all__ = ["ArmGrid", "ArmMeans", "AutoCATE", "TwoPart", "Blend", "CrossFitted", "DRLearner", "DoseLogit", "DoseResponseModel", "DoseVC", "DragonNet",
           "GBSDose", "GBSLearner", "GBTLearner", "PerArmCATEModel",
           "TARNet", "aipw_scores", "model_aipw_scores"]
