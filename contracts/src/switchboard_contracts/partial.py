"""Partial ("patch") versions of the entity models: every field optional, nested objects
partial too, formats still checked. The full rules run on the merged result."""

from __future__ import annotations

import types
import typing
import warnings
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model

_cache: dict[type[BaseModel], type[BaseModel]] = {}


def _partial_type(annotation: Any) -> Any:
    if annotation is SecretStr:
        return str
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return partial_model(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_partial_type(a) for a in typing.get_args(annotation))]  # noqa: UP007
    return annotation


def partial_model(model: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    if model in _cache:
        return _cache[model]
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation = _partial_type(info.annotation)
        metadata = list(info.metadata)
        if metadata:
            annotation = typing.Annotated[annotation, *metadata]
        fields[field_name] = (annotation | None, Field(default=None, description=info.description))
    with warnings.catch_warnings():
        # A field name that shadows a BaseModel attribute (SipTrunk.register) was accepted on
        # the model itself; its partial copy need not warn again.
        warnings.filterwarnings(
            "ignore", message=r'Field name "\w+" in "\w+" shadows an attribute', category=UserWarning
        )
        partial = create_model(
            name or f"{model.__name__.removesuffix('Fields')}Patch",
            __config__=ConfigDict(extra="forbid", str_strip_whitespace=True),
            **fields,
        )
    _cache[model] = partial
    return typing.cast(type[BaseModel], partial)
