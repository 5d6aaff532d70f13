"""YAML files people edit (params, mappings, the escalation matrix, alert destinations) read into
pydantic models.

One reader, so every such file fails the same way: one message that names the file, and for
each bad field its line and path, raised as the caller's own error type.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def find_line(root: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest node of `loc` (keys and list indexes) that exists in the file."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                         None)
            if match is None:
                return line
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def describe_validation_error(exc: ValidationError, root: yaml.Node | None = None) -> str:
    """'line N: a.b.c: problem' per error (no line when the file's node tree is not given)."""
    parts = []
    for err in exc.errors(include_url=False):
        line = find_line(root, err["loc"]) if root is not None else None
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        parts.append(f"{f'line {line}: ' if line else ''}{where}: {err['msg']}")
    return "; ".join(parts)


def load_yaml_model(path: Path, model: type[ModelT], what: str, error: type[Exception]) -> ModelT:
    """Read `path` (a YAML mapping) into `model`; any problem raises `error` naming `what`, the file,
    the line and the field."""
    try:
        text = Path(path).read_text()
        raw = yaml.safe_load(text)
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist (not found)") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise error(f"{what} {path} must be a mapping of keys to values, not a {type(raw).__name__}")
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raise error(f"{what} {path} is invalid: {describe_validation_error(exc, root)}") from exc
