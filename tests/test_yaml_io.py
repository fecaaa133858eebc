"""hpo.yaml_io: the YAML/ConfigError helpers that hpo.config and hpo.space share (no import circle)."""

import subprocess
import sys

import pytest

from hpo.config import config_error_from_pydantic as from_config
from hpo.config import read_yaml as read_from_config
from hpo.errors import ConfigError
from hpo.yaml_io import config_error_from_pydantic, read_yaml


def test_config_still_exports_the_helpers():
    assert read_from_config is read_yaml and from_config is config_error_from_pydantic


def test_space_imports_without_config():
    """The dependency points config -> space: loading a search space never imports hpo.config."""
    code = ("import sys, hpo.space; "
            "assert 'hpo.config' not in sys.modules, sorted(m for m in sys.modules if 'hpo' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text, key, allowed", [
    ("a: [1,", "(file)", "valid YAML"),
    ("- 1\n- 2\n", "(top level)", "a mapping of keys to values"),
])
def test_read_yaml_errors(tmp_path, text, key, allowed):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert info.value.file == str(path) and info.value.key == key
    assert info.value.allowed.startswith(allowed)
