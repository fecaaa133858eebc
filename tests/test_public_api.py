"""`import hpo` gives the public API: every name resolves to its module's object, documented,
and importing the package loads neither torch nor the sampler until a name is used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import hpo


def test_every_public_name_is_its_modules_object_and_documented():
    assert sorted(hpo.__all__) == sorted(hpo._LAZY) == sorted(set(dir(hpo)) & set(hpo._LAZY))
    for name in hpo.__all__:
        obj = getattr(hpo, name)
        assert obj is getattr(importlib.import_module(hpo._LAZY[name]), name), name
        assert (obj.__doc__ or "").strip(), f"hpo.{name} has no docstring"


def test_import_hpo_loads_no_torch_until_a_training_name_is_used():
    code = ("import sys, hpo; assert not any(m.startswith('torch') for m in sys.modules); "
            "hpo.load_study; assert not any(m.startswith('torch') for m in sys.modules); "
            "hpo.Trainer; assert 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_every_public_name_shows_a_runnable_example_and_its_arguments():
    """Each public name's own docstring has an example ``make test`` runs (--doctest-modules:
    not skipped) and an ``Args:`` section, as Optuna documents its classes."""
    import doctest
    import inspect

    missing = []
    for name in hpo.__all__:
        doc = inspect.getdoc(getattr(hpo, name)) or ""
        examples = doctest.DocTestParser().get_examples(doc)
        if not any(not e.options.get(doctest.SKIP) for e in examples) or "Args:" not in doc:
            missing.append(name)
    assert missing == []
