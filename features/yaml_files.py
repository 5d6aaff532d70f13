"""YAML files people edit (params, mappings, the escalation matrix) read into pydantic models.

One reader, so every such file fails the same way: one message that names the file and
every bad field, raised as the caller's own error type.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors(include_url=False)
    )


def load_yaml_model(path: Path, model: type[ModelT], what: str, error: type[Exception]) -> ModelT:
    """Read `path` (a YAML mapping) into `model`; any problem raises `error` naming `what` and the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist (not found)") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise error(f"{what} {path} must be a mapping of keys to values, not a {type(raw).__name__}")
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        raise error(f"{what} {path} is invalid: {describe_validation_error(exc)}") from exc
