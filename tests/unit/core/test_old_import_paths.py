"""The pre-restructure public paths still import, with a DeprecationWarning, and give the same objects."""

import importlib
import sys

import pytest

OLD_TO_NEW = [
    ("sevenomni.calculator", "SevenOmniCalculator", "sevenomni.calculators.ase_calculator"),
    ("sevenomni.calculator", "predict", "sevenomni.calculators.prediction"),
    ("sevenomni.calculator", "PredictionError", "sevenomni.calculators.prediction"),
    ("sevenomni.checkpoint", "save_checkpoint", "sevenomni.model_io.checkpoint"),
    ("sevenomni.checkpoint", "CheckpointError", "sevenomni.model_io.checkpoint"),
    ("sevenomni.loading", "load_model", "sevenomni.model_io.loading"),
]


@pytest.mark.parametrize(("old", "name", "new"), OLD_TO_NEW)
def test_old_path_warns_and_gives_the_same_object(old, name, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: import from .*{new.rsplit('.', 1)[0]}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_the_package_root_names_need_no_old_path(recwarn):
    import sevenomni

    assert sevenomni.SevenOmniCalculator.__module__ == "sevenomni.calculators.ase_calculator"
    assert sevenomni.load_model.__module__ == "sevenomni.model_io.loading"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning) and "sevenomni" in str(w.message)]
