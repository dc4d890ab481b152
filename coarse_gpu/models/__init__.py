"""Step 1, personalize: neural CATE models that predict each customer's profit at any treatment.

``TARNet`` and ``DragonNet`` learn one outcome head per experimental arm on a shared representation;
``predict_profit(X, T)`` extends the per-arm predictions to any treatments T with the linear
interpolation operator of ``ArmGrid`` (coarse_gpu.models.interpolate).
``DoseLogit`` (structured economic logit head) and ``DoseVC`` (varying-coefficient spline head) take
the treatment into the head and answer at any t directly (coarse_gpu.models.dose).
``CrossFitted`` gives out-of-fold predictions and seed/fold ensembles with a spread
(coarse_gpu.models.crossfit); ``aipw_scores`` the doubly robust pseudo-outcomes per customer and arm
(coarse_gpu.models.scores).

Every learner a user picks by name is registered below, one ``register_model`` line each
(coarse_gpu.models.registry): that line is what the CLI's ``model=<name>``, ``model=auto``'s candidates,
saving / loading and the docs' list read. A new learner needs the same one line (docs/extending.md).
"""
from coarse_gpu.models.arm_means import ArmMeans
from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.boosting import DRLearner, GBSLearner, GBTLearner
from coarse_gpu.models.crossfit import CrossFitted
from coarse_gpu.models.dose import DoseLogit, DoseResponseModel, DoseVC
from coarse_gpu.models.dragonnet import DragonNet
from coarse_gpu.models.gb_dose import GBSDose
from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.models.registry import register_model
from coarse_gpu.models.scores import aipw_scores, model_aipw_scores
from coarse_gpu.models.select import AutoCATE, Blend
from coarse_gpu.models.serialize import register
from coarse_gpu.models.tarnet import TARNet
from coarse_gpu.models.twopart import BASES as TWO_PART_BASES
from coarse_gpu.models.twopart import TwoPart

register_model("tarnet", TARNet)
register_model("dragonnet", DragonNet)
register_model("dose_logit", DoseLogit, dose=True)
register_model("dose_vc", DoseVC, dose=True)
register_model("gb_s", GBSLearner, dose=True)  # on a continuous dose it runs as GBSDose (experiment.dose)
register_model("gb_t", GBTLearner)
register_model("dr", DRLearner)
register_model("auto", AutoCATE, candidate=False)
register_model("arm_means", ArmMeans)
# model=twopart names its family by model.base; as a candidate of model=auto, by its name: twopart_<family>
register_model("twopart", TwoPart, candidate=False, variants=tuple(f"twopart_{b}" for b in TWO_PART_BASES))
# Wrappers that saved policies hold but no config names (a fitted model's parts): saving / loading only.
register(CrossFitted, Blend, GBSDose)

__all__ = ["ArmGrid", "ArmMeans", "AutoCATE", "TwoPart", "Blend", "CrossFitted", "DRLearner", "DoseLogit", "DoseResponseModel", "DoseVC", "DragonNet",
           "GBSDose", "GBSLearner", "GBTLearner", "PerArmCATEModel",
           "TARNet", "aipw_scores", "model_aipw_scores", "register_model"]
