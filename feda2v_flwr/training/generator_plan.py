"""Which generators a node trains: generator key (``unified``, ``class_<name>``,
``group_<name>``) -> the classes it serves, from ``generator_granularity``, the class groups and
the node's own overrides (``generator_train_classes``, ``generator_class_group``)."""

from __future__ import annotations

from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.config.schema import ExperimentConfig


def generator_plan(config: ExperimentConfig, partition_id: int, node_classes: list[str]) -> dict[str, list[str]]:
    """Generator key -> the classes it serves, for one node."""
    f, node = config.feda2v, config.node(partition_id)
    classes = list(node_classes)
    if node.generator_train_classes is not None:
        unknown = [c for c in node.generator_train_classes if c not in node_classes]
        if unknown:
            raise ConfigError(
                f"nodes.{partition_id}.generator_train_classes lists {unknown}, which node {partition_id} does not "
                f"hold (its classes: {node_classes})"
            )
        classes = [c for c in node_classes if c in node.generator_train_classes]
    if node.generator_class_group:
        return {f"group_{node.generator_class_group}": classes}
    granularity = node.generator_granularity or f.generator_granularity
    if granularity == "unified":
        return {"unified": classes}
    if granularity == "per_class":
        return {f"class_{c}": [c] for c in classes}
    group_of = {}
    for group, members in sorted((f.generator_class_groups or {}).items()):
        for member in members:
            group_of.setdefault(member, group)
    plan: dict[str, list[str]] = {}
    for c in classes:
        plan.setdefault(f"group_{group_of.get(c, 'other')}", []).append(c)
    return plan
