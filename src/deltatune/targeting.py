"""Which modules a config selects, with PEFT's matching rules and stricter errors.

- ``target_modules`` as a string is a regex that must match the whole module name; as a list,
  each entry matches a module whose name equals it or ends with ``"." + entry``.
- ``"all-linear"``: every dense layer except the output head (and modules trained in full).
- ``exclude_modules`` uses the same rules; ``modules_to_save`` modules are never adapted.
- ``layers_to_transform`` (+ ``layers_pattern``) keeps only the given layer indexes (for suffix
  matches of a list, as PEFT does).
- Unlike PEFT, a listed name that matches no module is an error listing the closest names.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from deltatune.config import AdapterConfig
from deltatune.errors import ConfigError, TargetError
from deltatune.integrations import transformers as hf
from deltatune.registry import Method

ALL_LINEAR = "all-linear"


def walk(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of the model as the user sees it: wrappers count as the module they wrap.

    An AdaptedLayer is yielded under the wrapped module's name, then the wrapped module's children
    under their own names (``...self_attn.q_proj``, not ``...self_attn.base_layer.q_proj``), so
    modules inside a module that another method adapts (an adaption prompt on ``self_attn``) can be
    targeted too; their layers nest inside the outer layer's ``base_layer``. Modules trained in full
    (ModulesToSave) are not entered: nothing inside them is ever a target.
    """
    from deltatune.layer import AdaptedLayer
    from deltatune.modules_to_save import ModulesToSave

    for name, child in model.named_children():
        full = f"{prefix}.{name}" if prefix else name
        yield full, child
        if isinstance(child, AdaptedLayer):
            yield from walk(child.base_layer, full)
        elif not isinstance(child, ModulesToSave):
            yield from walk(child, full)


def submodule(model: nn.Module, name: str) -> nn.Module:
    """The module at ``name`` as :func:`walk` names it (through AdaptedLayers' ``base_layer``)."""
    module = model
    for part in name.split(".") if name else []:
        child = unwrap_layer(module)._modules.get(part)
        if child is None:
            raise AttributeError(f"{type(model).__name__} has no module {name!r} (no {part!r} there).")
        module = child
    return module


def unwrap_layer(module: nn.Module) -> nn.Module:
    """The module behind an AdaptedLayer (the one whose children :func:`walk` names); others as they are."""
    from deltatune.layer import AdaptedLayer

    return module.base_layer if isinstance(module, AdaptedLayer) else module


def unwrap(module: nn.Module) -> nn.Module:
    """The user's module behind a deltatune wrapper."""
    from deltatune.layer import AdaptedLayer
    from deltatune.modules_to_save import ModulesToSave

    if isinstance(module, AdaptedLayer):
        return module.base_layer
    if isinstance(module, ModulesToSave):
        return module.original_module
    return module


def suffix_match(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)


def _matches(spec: str | list[str], name: str) -> bool:
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(suffix_match(name, entry) for entry in spec)


def _layer_index(name: str, layers_pattern: list[str] | str | None) -> int | None:
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    if not patterns:
        match = re.match(r".*?\.[^.]*\.(\d+)\.", name)
    else:
        match = None
        for pattern in patterns:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(\d+)\.", name)
            if match:
                break
    return int(match.group(1)) if match else None


def _in_layers(name: str, config: AdapterConfig) -> bool:
    wanted = config.layers_to_transform
    if wanted is None or wanted == []:
        return True
    index = _layer_index(name, config.layers_pattern)
    if index is None:
        return False
    return index == wanted if isinstance(wanted, int) else index in wanted


def is_saved_module(name: str, modules_to_save: list[str] | None) -> bool:
    """Inside (or equal to) a module trained in full: never a target."""
    return any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name) for m in modules_to_save or [])


def resolve_target_spec(model: nn.Module, config: AdapterConfig) -> str | list[str]:
    """target_modules with None replaced by the default of the config's method for this model."""
    if config.target_modules is not None:
        return config.target_modules
    default = hf.default_targets(model, config)
    if default is None:
        kind = hf.model_type(model) or type(model).__name__
        raise TargetError(
            f"target_modules is None and there is no default for model type {kind!r}; "
            'set target_modules, e.g. ["q_proj", "v_proj"] or "all-linear".'
        )
    return default


def find_targets(model: nn.Module, config: AdapterConfig, method: Method, *, strict: bool = True) -> list[str]:
    """Names of the modules ``config`` adapts in ``model``, in model order.

    ``strict`` makes a listed target that matches no module an error (a warning otherwise,
    which is how adapters written for a slightly different model still load).
    """
    spec = resolve_target_spec(model, config)
    modules = list(walk(model))
    names = [name for name, _ in modules]
    head = hf.output_head(model)
    all_linear = isinstance(spec, str) and spec.lower() == ALL_LINEAR
    if isinstance(spec, str) and not all_linear and config.layers_to_transform is not None:
        warnings.warn(
            "layers_to_transform is ignored when target_modules is a regex (as in PEFT); "
            "put the layer indexes into the regex instead.",
            stacklevel=3,
        )
    if not all_linear:
        _check_spec_matches(spec, names, strict)

    selected: list[str] = []
    for name, module in modules:
        base = unwrap(module)
        if all_linear:
            from deltatune import weights

            if not weights.is_linear(base) or base is head:
                continue
            hit = _in_layers(name, config)
        elif isinstance(spec, str):
            hit = re.fullmatch(spec, name) is not None
        elif name in spec:
            hit = True  # named exactly: PEFT applies no layer filter here
        else:
            hit = _matches(spec, name) and _in_layers(name, config)
        if not hit or is_saved_module(name, config.modules_to_save):
            continue
        if config.exclude_modules is not None and _matches(config.exclude_modules, name):
            continue
        selected.append(name)
    tied_head = hf.tied_output_head(model) if getattr(config, "follows_tied_head", False) else None
    if tied_head is not None and hf.input_embedding_name(model) in selected:
        # A method that edits embedding rows (trainable tokens) must reach the LM head tied to
        # them: the head is adapted too, after the embedding, so its adapter can share the rows.
        selected = [n for n in selected if n != tied_head] + [tied_head]
    if not selected:
        raise TargetError(
            f"target_modules={spec!r} selects no module of {type(model).__name__} "
            f"(after exclude_modules / layers_to_transform). {_suggest(str(spec), names)}"
        )
    return selected


def _check_spec_matches(spec: str | list[str], names: list[str], strict: bool) -> None:
    entries = [spec] if isinstance(spec, str) else spec
    for entry in entries:
        if any(_matches(entry if isinstance(spec, str) else [entry], n) for n in names):
            continue
        message = f"Target {entry!r} matches no module of the model. {_suggest(entry, names)}"
        if strict:
            raise TargetError(message + " Fix target_modules.")
        warnings.warn(message, stacklevel=4)


def _suggest(entry: str, names: list[str]) -> str:
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    close = difflib.get_close_matches(entry, leaves + names, n=5, cutoff=0.5)
    if close:
        return f"Closest module names: {close}."
    return f"Module names in this model include: {leaves[:20]}."


def compact_targets(model: nn.Module, selected: list[str]) -> list[str]:
    """A target list for adapter_config.json that selects exactly ``selected``.

    The leaf names (e.g. ["q_proj", "v_proj"]) when they select the same set under the suffix
    rule, which is what PEFT writes for "all-linear"; the full names otherwise.
    """
    leaves = sorted({n.rsplit(".", 1)[-1] for n in selected})
    chosen = {name for name, _ in walk(model) if _matches(leaves, name)}
    return leaves if chosen == set(selected) else list(selected)


def find_saved_modules(model: nn.Module, modules_to_save: list[str] | None) -> list[str]:
    """Names of the modules to train in full; each listed name must exist.

    An entry selects every module whose name ends with it as a plain string, not only at a dot
    ("norm" also selects "input_layernorm", "classifier" also "pre_classifier"): that is PEFT's
    rule, and a checkpoint holds one copy per selected module, so any other rule makes the
    same adapter_config.json mean different tensors in the two libraries.
    """
    found: list[str] = []
    names = [name for name, _ in walk(model)]
    for entry in modules_to_save or []:
        hits = [n for n in names if n.endswith(entry) and not any(n.startswith(f + ".") for f in found)]
        if not hits and any(entry in heads for heads in hf.TASK_HEADS.values()):
            # PEFT writes both head names ("classifier", "score") for every classification
            # model, and a model has only one of them.
            continue
        if not hits:
            raise TargetError(f"modules_to_save entry {entry!r} matches no module. {_suggest(entry, names)}")
        found.extend(h for h in hits if h not in found)
    return found


# ----------------------------------------------------------------------------- raw parameters
def parameters_of(module_name: str, module: nn.Module, entries: list[str]) -> list[str]:
    """The names of ``module``'s own parameters that ``entries`` select (PEFT's rule: the full name
    ``<module>.<parameter>`` equals an entry or ends with ``"." + entry``), in registration order."""
    found = []
    for param_name, _ in unwrap(module).named_parameters(recurse=False):
        key = f"{module_name}.{param_name}" if module_name else param_name
        if any(suffix_match(key, entry) for entry in entries):
            found.append(param_name)
    return found


def find_parameter_targets(model: nn.Module, config: AdapterConfig, *, strict: bool = True) -> dict[str, list[str]]:
    """{module name: its targeted parameter names} for ``config.target_parameters`` (LoRA), in model order.

    An entry that matches no parameter is an error listing the closest parameter names (a
    warning when ``strict`` is off, as for target_modules).
    """
    entries = getattr(config, "target_parameters", None) or []
    if not entries:
        return {}
    modules = list(walk(model))
    owners: dict[str, list[str]] = {}
    for name, module in modules:
        params = parameters_of(name, module, entries)
        if params:
            owners[name] = params
    if any(parameters_of("", model, entries)):
        raise TargetError(
            f"target_parameters {entries} select parameters of the model's root module itself; adapters wrap "
            "submodules, so target parameters that live in a submodule."
        )
    keys = [f"{n}.{p}" for n, m in modules for p, _ in unwrap(m).named_parameters(recurse=False)]
    for entry in entries:
        if any(suffix_match(key, entry) for key in keys):
            continue
        leaves = sorted({k.rsplit(".", 1)[-1] for k in keys})
        close = difflib.get_close_matches(entry, keys + leaves, n=5, cutoff=0.5)
        hint = f"Closest parameter names: {close}." if close else f"Parameter names include: {leaves[:20]}."
        message = f"target_parameters entry {entry!r} matches no parameter of the model. {hint}"
        if strict:
            raise TargetError(message + " Fix target_parameters.")
        warnings.warn(message, stacklevel=4)
    return owners


@dataclass
class Selection:
    """What one adapter adapts: modules picked by ``target_modules`` (or the method's own rule), and the
    modules that own parameters picked by ``target_parameters``."""

    modules: list[str]
    owners: list[str]
    # config.target_modules should become the compact list of ``modules`` (it was None = the
    # model type's default, or "all-linear"), so the saved config names what was adapted.
    rewrite_targets: bool

    @property
    def names(self) -> list[str]:
        return [*self.modules, *self.owners]


def select(model: nn.Module, config: AdapterConfig, method: Method, *, prompt: bool, strict: bool) -> Selection:
    """The targets of ``config`` on ``model``: a prompt method has none (it edits inputs, not layers), a
    method with ``select_targets`` uses its own rule, the rest the generic rules of this module."""
    # Raw parameters (LoRA's target_parameters) are adapted through the modules that own them;
    # with no target_modules (None or []) those modules are the only targets (PEFT's rule).
    owners = list(find_parameter_targets(model, config, strict=strict))
    only_parameters = bool(owners) and config.target_modules in (None, [])
    if prompt or only_parameters:
        return Selection([], owners, rewrite_targets=False)
    if method.select_targets is not None:  # it may fill config.target_modules with its model-type default
        return Selection(method.select_targets(model, config), owners, rewrite_targets=False)
    spec = resolve_target_spec(model, config)
    modules = find_targets(model, config, method, strict=strict)
    clash = sorted(set(modules) & set(owners))
    if clash:
        raise ConfigError(
            f"{clash} are selected by target_modules and own parameters selected by target_parameters; a module "
            "takes one or the other. Leave them out of one of the two lists."
        )
    is_all_linear = isinstance(spec, str) and spec.lower() == ALL_LINEAR
    return Selection(modules, owners, rewrite_targets=config.target_modules is None or is_all_linear)
