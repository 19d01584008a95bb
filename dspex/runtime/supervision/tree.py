"""Render a supervision tree as text (for ``dspex status``).

``TreeNode`` is plain data: a supervisor's ``tree()`` returns one, with its
running child supervisors' subtrees nested inside.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TreeNode:
    name: str
    kind: str = "worker"  # "worker" or "supervisor"
    state: str = "running"
    restarts: int = 0
    strategy: str | None = None  # supervisors only
    children: tuple[TreeNode, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # the child spec's labels (a replica's version)


def render_tree(root: TreeNode) -> str:
    """One line per node, children indented under box-drawing branches::

        app [supervisor one_for_one] running
        ├── cache [worker] running
        └── lm [supervisor rest_for_one] running restarts=1
            └── pool [worker] restarting restarts=3
    """
    lines = [_label(root)]
    _render_children(root.children, "", lines)
    return "\n".join(lines)


def _render_children(children: tuple[TreeNode, ...], prefix: str, lines: list[str]) -> None:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        lines.append(prefix + ("└── " if last else "├── ") + _label(child))
        _render_children(child.children, prefix + ("    " if last else "│   "), lines)


def _label(node: TreeNode) -> str:
    kind = f"{node.kind} {node.strategy}" if node.strategy else node.kind
    text = f"{node.name} [{kind}] {node.state}"
    if node.restarts:
        text = f"{text} restarts={node.restarts}"
    return " ".join([text, *(f"{key}={value}" for key, value in node.labels)])
