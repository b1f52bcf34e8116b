"""Read a recipe (YAML + ``key=value`` overrides) into :class:`~deltatune.training.config.Recipe`.

Every key is checked against the dataclasses: an unknown key names the nearest valid one, a value
of the wrong type names the key, the expected type and the value. ``adapter.options`` is checked
against the fields of the chosen method's config class the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from deltatune.training.config import Recipe, type_name
from deltatune.training.errors import RecipeError

RECIPE_SUFFIXES = (".yaml", ".yml")


def recipe_dirs() -> list[Path]:
    """Where recipes are found by name: ./recipes, then the ones shipped inside the package."""
    candidates = [Path.cwd() / "recipes", Path(__file__).resolve().parents[1] / "recipes"]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in seen:
            seen.append(c.resolve())
    return seen


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (file stem) -> file, for every YAML file in :func:`recipe_dirs`."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.iterdir()):
            if path.suffix in RECIPE_SUFFIXES:
                found.setdefault(path.stem, path)
    return found


def resolve_recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    near = difflib.get_close_matches(path.stem, list(shipped), n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise RecipeError(
        f"No recipe file {name_or_path!r} and no shipped recipe of that name.{hint} "
        f"Shipped recipes: {sorted(shipped) or 'none found'} (list them with `deltatune recipes`)."
    )


def load_recipe(name_or_path: str, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file (or a shipped recipe by name) and apply ``key=value`` overrides."""
    import yaml

    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping of sections (model:, data:, train:, ...).")
    for item in overrides:
        apply_override(data, item)
    return recipe_from_dict(data, source=str(path))


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``data``; the value is parsed as YAML (``[q, v]``, ``true``)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"Override {item!r} is not of the form key=value (e.g. train.lr=2e-4).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"Override {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    from deltatune.training.tasks import get_task_kind, task_options

    recipe = _build(Recipe, data, prefix="", source=source)
    check_adapter_options(recipe.adapter.method, recipe.adapter.options, source)
    try:
        kind = get_task_kind(recipe.task)
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    task_options(kind, recipe.task_options, source)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {prefix.rstrip('.') or 'the recipe'} must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise RecipeError(_unknown_key(f"{prefix}{key}", cls, prefix, source))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{prefix}{key}.", source)  # type: ignore[arg-type]
        else:
            kwargs[key] = check_value(value, tp, f"{prefix}{key}", source)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - every field has a default
        raise RecipeError(f"{source}: {exc}") from exc


def all_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys += all_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]  # type: ignore[arg-type]
    return keys


def _unknown_key(key: str, cls: type, prefix: str, source: str) -> str:
    keys = all_keys()
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not near:  # a typo in the section part: compare the last part with every leaf
        leaf = key.rsplit(".", 1)[-1]
        near = [
            k
            for k in keys
            if k.rsplit(".", 1)[-1] in difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in keys], n=1)
        ]
    hint = f" Did you mean {near[0]!r}?" if near else ""
    section = [f.name for f in dataclasses.fields(cls)]
    where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
    return f"{source}: unknown recipe key {key!r}.{hint} Keys of {where}: {', '.join(section)}."


def check_value(value: Any, tp: Any, key: str, source: str = "recipe") -> Any:
    """``value`` if it fits the type hint ``tp`` (ints widen to float, numeric strings to float)."""
    ok, out = _fit(value, tp)
    if not ok:
        raise RecipeError(
            f"{source}: recipe key {key!r} expects {type_name(tp)}, got {type(value).__name__} {value!r}."
        )
    return out


def _fit(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return value in args, value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            ok, out = _fit(value, arm)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        fitted = [_fit(v, args[0]) for v in value]
        return all(ok for ok, _ in fitted), [v for _, v in fitted]
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    return isinstance(value, tp), value


def check_adapter_options(method: str, options: dict[str, Any], source: str = "recipe") -> None:
    """Method name and option keys/types against the registry and the method's config class."""
    from deltatune.registry import registered_methods

    methods = registered_methods()
    if method not in methods:
        near = difflib.get_close_matches(method.upper(), list(methods), n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise RecipeError(f"{source}: adapter.method {method!r} is unknown.{hint} Choose one of {sorted(methods)}.")
    config_cls = methods[method].config_cls
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls) if f.init]
    for key, value in options.items():
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean 'adapter.options.{near[0]}'?" if near else ""
            raise RecipeError(f"{source}: unknown recipe key 'adapter.options.{key}' for {config_cls.__name__}.{hint}")
        check_value(value, hints[key], f"adapter.options.{key}", source)


def adapter_config(method: str, options: dict[str, Any], task_type: str | None) -> Any:
    """The method's config object; its own validation errors come through as RecipeError."""
    from deltatune.errors import ConfigError
    from deltatune.registry import registered_methods

    check_adapter_options(method, options)
    config_cls = registered_methods()[method].config_cls
    kwargs = dict(options)
    if task_type is not None:
        kwargs.setdefault("task_type", task_type)
    try:
        return config_cls(**kwargs)
    except ConfigError as exc:
        raise RecipeError(f"adapter.options: {exc}") from exc
