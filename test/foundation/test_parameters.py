"""config/mapping.yaml and the README table are generated from the config tree (mapping/config.py); both load."""
from pathlib import Path

import pytest
import yaml

from ilrm_ros.mapping.config import (MappingConfig, config_from_flat, default_params_file, flatten_ros_yaml,
                                     load_mapping_config, parameter_specs)
from ilrm_ros.mapping.parameter_docs import TABLE_BEGIN, TABLE_END, parameter_file, readme_table

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_file_declares_exactly_the_declared_parameters_with_their_defaults():
    flat = flatten_ros_yaml(yaml.safe_load((ROOT / "config" / "mapping.yaml").read_text()))
    specs = {s.name: s.default for s in parameter_specs()}
    assert set(flat) == set(specs), f"only in YAML: {set(flat) - set(specs)}; only in code: {set(specs) - set(flat)}"
    for name, default in specs.items():
        assert flat[name] == default, f"{name}: YAML {flat[name]!r} != declared default {default!r}"


def test_every_parameter_has_a_description():
    assert all(s.description.strip() for s in parameter_specs())


def test_default_parameter_file_loads_into_the_default_config():
    assert default_params_file() == ROOT / "config" / "mapping.yaml"
    assert load_mapping_config() == MappingConfig()


def test_overrides_are_validated_against_ranges_and_choices():
    cfg = load_mapping_config(overrides={"window.size": 8, "model.device": "cpu"})
    assert cfg.window.size == 8 and cfg.model.device == "cpu"
    with pytest.raises(ValueError, match="window.size"):
        config_from_flat({"window.size": 1})
    with pytest.raises(ValueError, match="model.device"):
        config_from_flat({"model.device": "tpu"})
    with pytest.raises(ValueError, match="keyframes.min_translation_m"):
        config_from_flat({"keyframes.min_translation_m": "far"})
    with pytest.raises(KeyError, match="window.sise"):
        config_from_flat({"window.sise": 4})


def test_parameter_file_may_use_a_namespaced_node_name_or_wildcard():
    doc = {"/robot1/ilrm_mapping": {"ros__parameters": {"window": {"size": 6}}}}
    assert flatten_ros_yaml(doc) == {"window.size": 6}
    assert flatten_ros_yaml({"/**": {"ros__parameters": {"map": {"fusion": False}}}}) == {"map.fusion": False}


def test_parameter_file_is_exactly_what_the_tree_generates():
    assert (ROOT / "config" / "mapping.yaml").read_text() == parameter_file(parameter_specs()), \
        "config/mapping.yaml is stale: run python -m ilrm_ros.mapping.parameter_docs"


def test_readme_parameter_table_is_exactly_what_the_tree_generates():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index(TABLE_BEGIN) + len(TABLE_BEGIN):readme.index(TABLE_END)]
    assert table == "\n" + readme_table(parameter_specs()), \
        "README table is stale: run python -m ilrm_ros.mapping.parameter_docs"
    assert all(f"| `{s.name}` |" in table for s in parameter_specs())
