"""`pydeploy inspect IMAGE`: an image's layers with their roles and sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydeploy.engine.client import Engine
from pydeploy.errors import ConfigError


@dataclass(frozen=True)
class LayerInfo:
    role: str
    diff_id: str
    size: int  # uncompressed bytes, as the engine reports them


@dataclass(frozen=True)
class ImageInfo:
    name: str
    image_id: str
    user: str
    entrypoint: list[str]
    labels: dict[str, str]
    layers: tuple[LayerInfo, ...]

    @property
    def own_size(self) -> int:
        return sum(layer.size for layer in self.layers if layer.role != "base")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_id": self.image_id,
            "user": self.user,
            "entrypoint": self.entrypoint,
            "labels": self.labels,
            "layers": [
                {"role": la.role, "diff_id": la.diff_id, "size": la.size} for la in self.layers
            ],
            "added_size": self.own_size,
        }


def inspect_image(engine: Engine, name: str) -> ImageInfo:
    info = engine.inspect_image(name)
    if info is None:
        raise ConfigError(
            f"The engine has no image `{name}`.",
            hint="Build it with `pydeploy build` or check the name with `docker images`.",
        )
    diff_ids = info.diff_ids
    # History is newest first; pydeploy's own entries say `pydeploy: <role>`, one per
    # layer, and sit on top of the base's layers.
    history = list(reversed(engine.image_history(name)))
    own = [h for h in history if h.created_by.startswith("pydeploy: ")]
    base_count = len(diff_ids) - len(own)
    base_sizes = [h.size for h in history[: len(history) - len(own)]]
    layers: list[LayerInfo] = []
    for index, diff_id in enumerate(diff_ids):
        if index >= base_count:
            entry = own[index - base_count]
            role = entry.created_by.split("pydeploy: ", 1)[1]
            layers.append(LayerInfo(role, diff_id, entry.size))
        else:
            # Base history may hold metadata-only steps; sizes line up only when it does not.
            size = base_sizes[index] if len(base_sizes) == base_count else 0
            layers.append(LayerInfo("base", diff_id, size))
    return ImageInfo(
        name=name,
        image_id=info.image_id,
        user=info.user or "root",
        entrypoint=list(info.entrypoint),
        labels=dict(info.labels),
        layers=tuple(layers),
    )
