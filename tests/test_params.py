"""Each estimator parameter's range is stated once, on its class (``_parameter_constraints``,
coarse_gpu.utils.params), and both doors read it: the estimator's own ``fit`` check and the config
check of ``model.*`` refuse the same value with the same allowed range."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.experiment.model_build import MODELS, model_key_problems
from coarse_gpu.experiment.validate import RULES
from coarse_gpu.utils.params import Rule, check_params, choice, constraints_of, integer, number, param_problems


def _outside(rule: Rule):
    """A value the rule refuses (the nearest one below its lower bound, or an unknown option)."""
    if rule.kind == "choice":
        return "no-such-option"
    if rule.lo is not None:
        return (int(rule.lo) - 1) if rule.kind == "int" else (rule.lo if rule.lo_open else rule.lo - 0.5)
    return rule.hi + 1 if rule.hi is not None else None


def _cases():
    for name, cls in sorted(MODELS.items()):
        takes = cls().get_params()
        for key, rule in sorted(constraints_of(cls).items()):
            if key in takes and _outside(rule) is not None:
                yield pytest.param(name, cls, key, rule, id=f"{name}.{key}")


@pytest.mark.parametrize("name,cls,key,rule", list(_cases()))
def test_the_estimator_and_the_config_check_refuse_the_same_value_with_the_same_range(name, cls, key, rule):
    bad = _outside(rule)
    assert not rule.ok(bad)
    est = cls().set_params(**{key: bad})
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: {key}=.* must be "):
        check_params(est)
    problems = model_key_problems({"name": name, key: bad})
    assert problems == [f"model.{key}={bad!r} must be {rule.describe()}"]
    # the class's default passes both checks
    check_params(cls())
    assert model_key_problems({"name": name}) == []


def test_no_model_range_is_stated_twice():
    declared = set()
    for cls in MODELS.values():
        declared |= set(constraints_of(cls))
    assert not {k for k in RULES if k.startswith("model.")} & {f"model.{k}" for k in declared}


def test_rules_say_what_they_accept():
    assert integer(1, options=("auto",)).ok("auto") and integer(1).ok(np.int64(3))
    assert not integer(1).ok(True) and not integer(1).ok(0) and not integer(1).ok(1.5)
    assert number(0.0, 1.0, hi_open=True).describe() == "a number in [0, 1)"
    assert not number().ok(float("nan")) and number(null=True).ok(None)
    assert choice("a", "b").describe() == "one of ['a', 'b']" and not choice("a").ok(None)
    assert param_problems({"x": number(0.0, lo_open=True)}, {"x": 0.0, "y": -1}, "p.") == \
        ["p.x=0.0 must be a number > 0"]


def test_a_subclass_adds_to_its_bases_rules():
    from coarse_gpu.models import DragonNet, TARNet

    assert set(constraints_of(TARNet)) < set(constraints_of(DragonNet))
    assert {"alpha", "beta", "propensity_clip"} <= set(constraints_of(DragonNet))
