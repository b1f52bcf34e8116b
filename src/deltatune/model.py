"""DeltaModel: the adapter lifecycle on a whole model.

It wraps the user's model (``self.model``), passes ``forward``/``generate`` through, and owns
adding, switching, disabling, merging, deleting, saving and loading adapters. Per-layer work
lives in :class:`~deltatune.layer.AdaptedLayer`; file formats in :mod:`deltatune.checkpoint`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn

from deltatune import signature, targeting, weights
from deltatune.config import AdapterConfig
from deltatune.errors import AdapterNameError, ConfigError, DeltatuneError, MergeError
from deltatune.integrations import transformers as hf
from deltatune.layer import BASE, AdaptedLayer, Adapter, Routing, Runtime
from deltatune.modules_to_save import ModulesToSave
from deltatune.registry import method_for_config

_BAD_NAME = re.compile(r"[/\\\x00]|^\.\.?$|^\s|\s$")


def check_adapter_name(name: object) -> str:
    """Adapter names become folder names: no separators, no ``..``, not empty, not ``__base__``."""
    if not isinstance(name, str) or not name or _BAD_NAME.search(name) or name == BASE:
        raise AdapterNameError(
            f"Invalid adapter name {name!r}: use a non-empty name without '/', '\\', surrounding "
            f"spaces, '.' or '..', other than {BASE!r} (reserved for 'no adapter'), e.g. 'default' or 'task_a'."
        )
    return name


class DeltaModel(nn.Module):
    """A model with adapters. Create with :func:`deltatune.wrap` or :meth:`from_pretrained`."""

    def __init__(self, model: nn.Module, config: AdapterConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self._setup(model)
        self.add_adapter(adapter_name, config)
        self.set_adapter(adapter_name)

    def _setup(self, model: nn.Module) -> None:
        if isinstance(model, DeltaModel):
            raise DeltatuneError("This model already has adapters; call model.add_adapter(name, config) instead.")
        if not isinstance(model, nn.Module):
            raise DeltatuneError(f"Expected a torch.nn.Module to adapt, got {type(model).__name__}.")
        if type(self) is DeltaModel:  # forward shows the wrapped model's parameters (signature.py)
            self.__class__ = signature.typed_class(DeltaModel, type(model))
        self.model = model
        self.peft_config: dict[str, AdapterConfig] = {}
        self._runtime = Runtime()
        self._warned_frozen = False
        # adapter name -> tensors all layers of that adapter share (see registry.Method.create_shared).
        # Not "shared": that name would hide e.g. T5's ``model.shared`` embedding from users.
        self.shared_by_adapter = nn.ModuleDict()
        # adapter name -> whole-model prompt adapter (registry.Method.create_prompt, see deltatune.prompt).
        self.prompt_by_adapter = nn.ModuleDict()
        for param in model.parameters():
            param.requires_grad_(False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self._modules["model"], name)

    # ----------------------------------------------------------------------------- adapters
    def add_adapter(self, adapter_name: str, config: AdapterConfig, *, strict_targets: bool = True) -> None:
        """Inject a new adapter (inactive until :meth:`set_adapter`). All-or-nothing."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise AdapterNameError(
                f"An adapter named {adapter_name!r} already exists; pick another name or delete_adapter() it first."
            )
        if not isinstance(config, AdapterConfig):
            raise ConfigError(f"Expected an adapter config such as LoraConfig, got {type(config).__name__}.")
        config = copy.deepcopy(config)
        method = method_for_config(config)
        if config.task_type in hf.TASK_HEADS:
            names = [n for n, _ in targeting.walk(self.model)]
            heads = [h for h in hf.TASK_HEADS[config.task_type] if any(n.endswith(h) for n in names)]
            config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), *heads]))
        prompt = None if method.create_prompt is None else method.create_prompt(self.model, config)
        selection = targeting.select(self.model, config, method, prompt=prompt is not None, strict=strict_targets)
        names = selection.names
        saved = targeting.find_saved_modules(self.model, config.modules_to_save)
        modules = dict(targeting.walk(self.model))
        # Build every adapter before touching the model, so a failure leaves it unchanged.
        bases = {n: targeting.unwrap(modules[n]) for n in names}
        shared = None if method.create_shared is None else method.create_shared(self.model, config, bases)
        extra: dict[str, Any] = {} if method.create_shared is None else {"shared": shared}
        created = {n: method.create(bases[n], n, config, **extra) for n in names}
        if hasattr(config, "fan_in_fan_out") and any(weights.is_transposed_linear(m) for m in bases.values()):
            config.fan_in_fan_out = True  # what PEFT writes for GPT-2 Conv1D layers (detected here anyway)
        if selection.rewrite_targets:
            config.target_modules = targeting.compact_targets(self.model, selection.modules)
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = _name_or_path(self.model)
        for name, adapter in created.items():
            adapter.train(self.training)  # a new adapter follows the model's train/eval mode
            self._layer_at(name, modules[name]).adapters[adapter_name] = adapter
        for name in saved:
            self._saved_at(name, modules[name]).add(adapter_name)
        if shared is not None:
            self.shared_by_adapter[adapter_name] = shared
        if prompt is not None:
            self.prompt_by_adapter[adapter_name] = prompt.train(self.training)
        self.peft_config[adapter_name] = config
        self._update_trainable()

    def _layer_at(self, name: str, module: nn.Module) -> AdaptedLayer:
        if isinstance(module, AdaptedLayer):
            return module
        layer = AdaptedLayer(module, self._runtime)
        _replace(self.model, name, layer)
        return layer

    def _saved_at(self, name: str, module: nn.Module) -> ModulesToSave:
        if isinstance(module, ModulesToSave):
            return module
        wrapper = ModulesToSave(module, self._runtime)
        _replace(self.model, name, wrapper)
        return wrapper

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Make these adapters the active ones (several can be active at once); only they train."""
        if isinstance(adapter_name, str):
            names = [adapter_name]
        elif isinstance(adapter_name, (list, tuple)) and adapter_name:
            names = list(adapter_name)
        else:
            raise AdapterNameError(
                f"set_adapter takes an adapter name or a non-empty list of names, got {adapter_name!r}; "
                f"this model has {list(self.peft_config)} (use `with model.disable_adapters():` for the base model)."
            )
        for name in names:
            self._require(name)
        if sum(name in self.prompt_by_adapter for name in names) > 1:
            raise DeltatuneError(f"Only one prompt-learning adapter can be active at a time; got {names}.")
        self._runtime.active = tuple(names)
        self._update_trainable()

    @property
    def active_adapters(self) -> list[str]:
        return list(self._runtime.active)

    @property
    def active_adapter(self) -> str:
        return self._runtime.active[0] if self._runtime.active else ""

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter from every layer; layers left without adapters get their module back."""
        self._require(adapter_name)
        for _, layer in self.adapted_layers():
            if adapter_name in layer.merged:
                raise MergeError(f"Adapter {adapter_name!r} is merged; call unmerge_adapter() before deleting it.")
        for path, layer in list(self.adapted_layers()):
            if adapter_name in layer.adapters:
                del layer.adapters[adapter_name]
                if not len(layer.adapters):
                    _replace(self.model, path, layer.base_layer)
        for path, wrapper in list(self.saved_modules()):
            if adapter_name in wrapper.modules_to_save:
                del wrapper.modules_to_save[adapter_name]
                if not len(wrapper.modules_to_save):
                    _replace(self.model, path, wrapper.original_module)
        if adapter_name in self.shared_by_adapter:
            del self.shared_by_adapter[adapter_name]
        if adapter_name in self.prompt_by_adapter:
            del self.prompt_by_adapter[adapter_name]
        del self.peft_config[adapter_name]
        self._runtime.active = tuple(n for n in self._runtime.active if n != adapter_name)
        self._update_trainable()

    def _require(self, name: str) -> None:
        if name not in self.peft_config:
            raise AdapterNameError(f"No adapter named {name!r}; this model has {sorted(self.peft_config)}.")

    def adapted_layers(self) -> Iterator[tuple[str, AdaptedLayer]]:
        for name, module in targeting.walk(self.model):
            if isinstance(module, AdaptedLayer):
                yield name, module

    def saved_modules(self) -> Iterator[tuple[str, ModulesToSave]]:
        for name, module in targeting.walk(self.model):
            if isinstance(module, ModulesToSave):
                yield name, module

    def adapter_modules(self, adapter_name: str) -> Iterator[tuple[str, Adapter]]:
        """(layer path, adapter) for every layer holding ``adapter_name``."""
        for path, layer in self.adapted_layers():
            adapter = layer.adapters._modules.get(adapter_name)
            if adapter is not None:
                assert isinstance(adapter, Adapter)
                yield path, adapter

    # ----------------------------------------------------------------------------- trainability
    def adapter_parameters(self, adapter_name: str) -> Iterator[nn.Parameter]:
        """The parameters that belong to one adapter (found by what they are, not by name)."""
        for _, adapter in self.adapter_modules(adapter_name):
            yield from adapter.parameters()
        for _, wrapper in self.saved_modules():
            copy_ = wrapper.modules_to_save._modules.get(adapter_name)
            if copy_ is not None:
                yield from copy_.parameters()
        shared = self.shared_by_adapter._modules.get(adapter_name)
        if shared is not None:
            yield from shared.parameters()
        if adapter_name in self.prompt_by_adapter:
            yield from self.prompt_by_adapter[adapter_name].parameters()
        yield from self._bias_parameters(adapter_name)

    def _bias_parameters(self, adapter_name: str) -> Iterator[nn.Parameter]:
        mode = getattr(self.peft_config[adapter_name], "bias", "none")
        if mode == "all":
            for module in _plain_modules(self.model):
                bias = module._parameters.get("bias")
                if isinstance(bias, nn.Parameter):
                    yield bias
        elif mode.endswith("_only"):
            for _, layer in self.adapted_layers():
                bias = getattr(layer.base_layer, "bias", None)
                if adapter_name in layer.adapters and isinstance(bias, nn.Parameter):
                    yield bias

    def _update_trainable(self) -> None:
        trainable: set[int] = set()
        for name in self._runtime.active:
            if not self.peft_config[name].inference_mode:
                trainable.update(id(p) for p in self.adapter_parameters(name))
        for name in self.peft_config:
            for param in self.adapter_parameters(name):
                param.requires_grad_(id(param) in trainable)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters) of the whole model, adapters included."""
        params = {id(p): p for p in self.parameters()}.values()  # the model's and the shared tensors
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return trainable, sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        share = 100 * trainable / total if total else 0.0
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}")

    # ----------------------------------------------------------------------------- forward
    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        if adapter_names is None:
            self._warn_if_frozen()
            prompt = self._active_prompt()
            if prompt is not None:  # virtual tokens or a KV prefix: the prompt package runs the model
                return self._add_training_loss(prompt.run(self.model, args, kwargs))
            return self._add_training_loss(self.model(*args, **kwargs))
        # Routing is set up and cleared outside any compiled graph (see _begin_routing), so a compiled
        # model does not guard on the list of names: only on the set of adapters the batch uses.
        self._begin_routing(adapter_names, _batch_size(args, kwargs))
        try:
            return self.model(*args, **kwargs)
        finally:
            self._end_routing()

    def training_loss(self) -> torch.Tensor | None:
        """The regularisers of the active trainable adapters' methods (``Method.training_loss``, e.g.
        AdaLoRA's orthogonality term), summed; None when there is none.

        ``forward`` adds it to the output's ``.loss`` in training mode; a loop that computes its own
        loss from the logits adds it itself (once per forward).
        """
        total: torch.Tensor | None = None
        for name in self._runtime.active:
            config = self.peft_config[name]
            extra = method_for_config(config).training_loss
            term = None if extra is None or config.inference_mode else extra(self, name)
            if term is not None:
                total = term if total is None else total + term
        return total

    def _add_training_loss(self, outputs: Any) -> Any:
        loss = getattr(outputs, "loss", None)
        if not self.training or self._runtime.disabled or not isinstance(loss, torch.Tensor):
            return outputs
        extra = self.training_loss()
        if extra is not None:
            outputs.loss = loss + extra
        return outputs

    def on_optimizer_step(self, global_step: int) -> None:
        """Per-step work of methods that change during training (AdaLoRA's rank budget).

        Call it after ``optimizer.step()`` and before ``zero_grad()`` (it reads the gradients), with
        ``global_step`` = the optimizer steps done before this one (0 for the first), as Trainer's
        ``state.global_step`` in its ``on_optimizer_step`` event; ``integrations.trainer_hooks`` does
        that for a transformers Trainer. Runs each active trainable adapter's ``Method.on_optimizer_step``.
        """
        for name in self._runtime.active:
            config = self.peft_config[name]
            hook = method_for_config(config).on_optimizer_step
            if hook is not None and not config.inference_mode:
                hook(self, name, global_step)

    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        generate = cast(Any, self.model).generate
        prompt = self._active_prompt()
        if adapter_names is None and prompt is not None:
            return prompt.generate(self.model, args, kwargs)
        if adapter_names is None:
            return generate(*args, **kwargs)
        with self._route(adapter_names):
            return generate(*args, **kwargs)

    @contextlib.contextmanager
    def _route(self, adapter_names: Sequence[str]) -> Iterator[None]:
        self._begin_routing(adapter_names, None)
        try:
            yield
        finally:
            self._end_routing()

    @torch.compiler.disable
    def _begin_routing(self, adapter_names: Sequence[str], batch: int | None) -> None:
        """Check ``adapter_names`` and put the per-sample routing into the shared runtime.

        Runs eagerly even inside ``torch.compile`` (a graph break here), so the compiled graph sees
        only the Routing: the names the batch uses, in the model's adapter order, and an index tensor.
        ``batch``: the forward's batch size, which must equal the number of names (generate passes
        None: it repeats each sample's name over its beams itself).
        """
        if isinstance(adapter_names, str) or not len(adapter_names):
            raise DeltatuneError("adapter_names must be a list with one adapter name per sample.")
        if batch is not None and len(adapter_names) != batch:
            raise DeltatuneError(
                f"adapter_names has {len(adapter_names)} entries for a batch of {batch} samples; "
                "pass one adapter name per sample ('__base__' for no adapter)."
            )
        used = set(adapter_names)
        if self._active_prompt() is not None or any(name in self.prompt_by_adapter for name in used):
            raise DeltatuneError("Prompt-learning adapters cannot join mixed batches (adapter_names=...).")
        for name in dict.fromkeys(adapter_names):
            if name != BASE:
                self._require(name)
        # The model's own adapter order, not the batch's: batches using the same adapters share the
        # layers' cached stacks, and a compiled model sees the same names (no recompile per ordering).
        unique = [name for name in (*self.peft_config, BASE) if name in used]
        position = {name: i for i, name in enumerate(unique)}
        index = torch.tensor([position[n] for n in adapter_names], dtype=torch.long)
        self._runtime.routing = Routing(tuple(unique), index)

    @torch.compiler.disable
    def _end_routing(self) -> None:
        self._runtime.routing = None

    def _active_prompt(self) -> Any:
        """The active prompt adapter (see deltatune.prompt), or None (none active, or adapters disabled)."""
        if self._runtime.disabled:
            return None
        return next((self.prompt_by_adapter[n] for n in self._runtime.active if n in self.prompt_by_adapter), None)

    def _warn_if_frozen(self) -> None:
        if not self.training or not torch.is_grad_enabled() or self._warned_frozen:
            return
        frozen = [n for n in self._runtime.active if self.peft_config[n].inference_mode]
        if frozen and len(frozen) == len(self._runtime.active):
            self._warned_frozen = True
            warnings.warn(
                f"Adapters {frozen} are frozen (loaded with is_trainable=False), so training will not change "
                "them. Load with DeltaModel.from_pretrained(model, path, is_trainable=True) to train.",
                stacklevel=3,
            )

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Inside this block the model computes exactly the base model (merged adapters are undone)."""
        remerge = {path: list(layer.merged) for path, layer in self.adapted_layers() if layer.merged}
        self.unmerge_adapter()
        was_disabled = self._runtime.disabled  # nested blocks: the outer one stays disabled
        self._runtime.disabled = True
        try:
            yield
        finally:
            self._runtime.disabled = was_disabled
            for path, layer in self.adapted_layers():
                if path in remerge:
                    layer.merge(remerge[path])

    # ----------------------------------------------------------------------------- merging
    def merge_adapter(self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False) -> None:
        """Fold adapters (default: the active ones) into the base weights; all layers or none.

        Active adapters merge in activation order (the first active one acts nearest the base),
        whatever the order of ``adapter_names``; inactive ones merge before them, as listed.
        """
        names = list(self._runtime.active if adapter_names is None else adapter_names)
        for name in names:
            self._require(name)
            if name in self.prompt_by_adapter:
                raise MergeError(f"Adapter {name!r} is a prompt-learning adapter; it has no weights to merge.")
        active = self._runtime.active
        names = list(dict.fromkeys([n for n in names if n not in active] + [n for n in active if n in names]))
        done: list[AdaptedLayer] = []
        try:
            for _, layer in self.adapted_layers():
                before = list(layer.merged)
                layer.merge(names, safe=safe_merge)
                if layer.merged != before:
                    done.append(layer)
        except Exception:
            for layer in done:  # roll back: no layer stays half-merged
                layer.unmerge()
            raise

    def unmerge_adapter(self) -> None:
        for _, layer in self.adapted_layers():
            layer.unmerge()

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> nn.Module:
        """Merge, then return the plain model (modules_to_save keep the active adapter's copy)."""
        self.merge_adapter(adapter_names, safe_merge=safe_merge)
        return self._unload(keep_trained_copies=True)

    def unload(self) -> nn.Module:
        """Remove every adapter without merging and return the original model."""
        self.unmerge_adapter()
        return self._unload(keep_trained_copies=False)

    def _unload(self, keep_trained_copies: bool) -> nn.Module:
        for path, layer in list(self.adapted_layers()):
            _replace(self.model, path, layer.base_layer)
        for path, wrapper in list(self.saved_modules()):
            _replace(self.model, path, wrapper.current() if keep_trained_copies else wrapper.original_module)
        self.peft_config.clear()
        self.shared_by_adapter.clear()
        self.prompt_by_adapter.clear()
        self._runtime.active = ()
        return self.model

    def get_base_model(self) -> nn.Module:
        return self.model

    # ----------------------------------------------------------------------------- files
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        selected_adapters: Sequence[str] | None = None,
        path_initial_model_for_weight_conversion: str | os.PathLike[str] | None = None,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        save_embedding_layers: str | bool = "auto",
        **unknown: Any,
    ) -> None:
        """Write adapters in PEFT's layout: "default" at the root, others in ``<dir>/<name>/``.

        ``path_initial_model_for_weight_conversion``: the folder of a PiSSA/OLoRA adapter as saved
        right after its init; the adapter is then saved as a plain LoRA (rank 2r) for the original
        base weights (see ``methods/lora/init.py``). ``is_main_process=False`` writes nothing (the
        other ranks of a distributed run). Weights are always written as safetensors.
        """
        from deltatune.checkpoint import save_adapter

        if unknown:
            raise DeltatuneError(
                f"save_pretrained got unknown argument(s) {sorted(unknown)}; it takes save_directory, "
                "selected_adapters, path_initial_model_for_weight_conversion, safe_serialization, "
                "is_main_process and save_embedding_layers."
            )
        if save_embedding_layers is True:
            raise DeltatuneError(
                "save_embedding_layers=True is not supported: to save a resized or trained embedding, list it in "
                "modules_to_save (whole layer) or use TrainableTokensConfig (chosen rows)."
            )
        if not safe_serialization:
            warnings.warn(
                "safe_serialization=False: deltatune writes adapter_model.safetensors only (PEFT and transformers "
                "read it); no pickle file is written.",
                stacklevel=2,
            )
        names = list(self.peft_config if selected_adapters is None else selected_adapters)
        for name in names:
            self._require(name)
        if not is_main_process:
            return
        for name in names:
            folder = os.path.join(save_directory, name) if name != "default" else os.fspath(save_directory)
            save_adapter(self, name, folder, path_initial_model_for_weight_conversion)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike[str],
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: AdapterConfig | None = None,
        subfolder: str | None = None,
        **hub_kwargs: Any,
    ) -> DeltaModel:
        """Load a saved adapter (ours or PEFT's) onto ``model``; frozen unless ``is_trainable``."""
        from deltatune.checkpoint import resolve_adapter

        check_adapter_name(adapter_name)
        folder, config = resolve_adapter(model_id, config, subfolder, hub_kwargs)
        config.inference_mode = not is_trainable
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(model)
        self._load(folder, adapter_name, config)
        self.set_adapter(adapter_name)
        if not is_trainable:
            self.eval()  # loaded for inference: dropout off
        return self

    def load_adapter(
        self,
        model_id: str | os.PathLike[str],
        adapter_name: str,
        is_trainable: bool = False,
        config: AdapterConfig | None = None,
        subfolder: str | None = None,
        **hub_kwargs: Any,
    ) -> None:
        """Load another saved adapter under ``adapter_name`` (inactive until set_adapter)."""
        from deltatune.checkpoint import resolve_adapter

        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise AdapterNameError(f"An adapter named {adapter_name!r} already exists; pick another name.")
        folder, config = resolve_adapter(model_id, config, subfolder, hub_kwargs)
        config.inference_mode = not is_trainable
        self._load(folder, adapter_name, config)

    def _load(self, folder: str, adapter_name: str, config: AdapterConfig) -> None:
        from deltatune.checkpoint import load_weights

        self.add_adapter(adapter_name, config, strict_targets=False)
        try:
            load_weights(self, adapter_name, folder)
        except BaseException:
            self.delete_adapter(adapter_name)
            raise


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The batch size of a forward call: the first dimension of its main input, when there is one."""
    first = args[0] if args else next((kwargs[k] for k in ("input_ids", "inputs_embeds", "x") if k in kwargs), None)
    return first.shape[0] if isinstance(first, torch.Tensor) and first.dim() > 0 else None


def wrap(model: nn.Module, config: AdapterConfig, adapter_name: str = "default") -> DeltaModel:
    """Add an adapter to ``model``; only the adapter's parameters train."""
    return DeltaModel(model, config, adapter_name)


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    # Through an AdaptedLayer on the parent (layers nest: LoRA on q_proj inside an adapted self_attn).
    parent = targeting.unwrap_layer(targeting.submodule(root, parent_path))
    setattr(parent, child, module)


def _plain_modules(model: nn.Module) -> Iterator[nn.Module]:
    """The user's modules, wrappers seen through, adapters and trained copies left out."""
    for _, module in targeting.walk(model):
        base = targeting.unwrap(module)
        if isinstance(module, ModulesToSave):
            continue
        yield base


def _name_or_path(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    value = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    return value if isinstance(value, str) and value else None
