"""Runtime parameter changes: validated as a whole, applied atomically.

rclpy calls the node's on-set callback with the parameters of one request (one per
``set_parameters`` entry, all of them for ``set_parameters_atomically``). The
:class:`ParameterGate` builds the configuration that *would* result, validates it as a
whole (each value against its spec, then the checks across parameters, then everything
derived from it, e.g. the keyframe policy), and only then commits it: a rejected set
leaves every value and the node's behaviour exactly as they were.
"""
from __future__ import annotations

import array
from dataclasses import fields
from typing import Any, Callable, Iterable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from ilrm_ros.core.params import ParameterSpec
from ilrm_ros.mapping.config import MappingConfig, config_from_flat, with_values


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: description, choices, range (with special values), read-only
    (every parameter not declared ``runtime`` in the configuration tree)."""
    desc = ParameterDescriptor(description=spec.description)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.special:
        desc.additional_constraints = f"{spec.range[0]}..{spec.range[1]} or special value(s) {list(spec.special)}"
    lo, hi = spec.declared_range()
    if lo is not None and hi is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    desc.read_only = not spec.runtime
    return desc


def plain_value(value: Any) -> Any:
    """rclpy's parameter value as plain Python (``array('d', …)`` -> list)."""
    if isinstance(value, array.array):
        return value.tolist()
    return value


def parameter_values(params: Iterable[Any]) -> dict[str, Any]:
    """``{name: plain value}`` of rclpy Parameters, without ROS's own ``use_sim_time``."""
    return {p.name: plain_value(p.value) for p in params if p.name != "use_sim_time"}


def declare_parameters(node: Any, specs: Iterable[ParameterSpec]) -> MappingConfig:
    """Declare every spec on ``node`` (default and descriptor); the configuration their values give."""
    names = []
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, descriptor(spec))
        names.append(spec.name)
    return config_from_flat(parameter_values(node.get_parameter(n) for n in names))


class ParameterGate:
    """Validates parameter sets against the whole configuration and commits them atomically.

    cfg:     the live configuration (mutated in place on commit, so holders of it see the change).
    prepare: ``prepare(candidate) -> commit`` builds whatever the new values need (may raise
             ValueError to reject the set) and returns a no-argument function applying it;
             it runs after ``cfg`` has been updated.
    """

    def __init__(self, cfg: MappingConfig | None, prepare: Callable[[MappingConfig], Callable[[], None]]) -> None:
        self.cfg = cfg
        self.prepare = prepare

    def check(self, values: dict[str, Any]) -> str | None:
        """Apply ``values`` if the resulting configuration is valid; returns None or the reason it was not."""
        try:
            if self.cfg is None:  # while the node declares its parameters
                config_from_flat(values)
                return None
            candidate = with_values(self.cfg, values)
            commit = self.prepare(candidate)
        except (KeyError, ValueError, TypeError) as exc:
            return str(exc).strip("'\"")
        for section in fields(MappingConfig):
            setattr(self.cfg, section.name, getattr(candidate, section.name))
        commit()
        return None

    def on_set(self, params: Iterable[Any]) -> SetParametersResult:
        """rclpy's on-set-parameters callback: the request applied as a whole, or refused with the reason."""
        reason = self.check(parameter_values(params))
        return SetParametersResult(successful=reason is None, reason=reason or "")
