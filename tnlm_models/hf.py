"""MPOBERT as a Hugging Face ``transformers`` architecture (``model_type`` "mpobert").

Thin wrappers, not a second model: ``MPOBertHFConfig`` converts to and from
``MPOBertConfig``, and each model class builds the project's model
(``MPOBertModel``, ``MPOBertForMaskedLM``, ``MPOBertForSequenceClassification``), adopts its
submodules (so parameter names, and the safetensors keys, are the project's:
``bert.encoder.central.query``, ...) and calls its ``forward``::

    MPOBertHFForMaskedLM (transformers.PreTrainedModel)
      .mpobert_model --> MPOBertForMaskedLM (the one implementation)
      .bert, .head   --> the same submodules, registered here too

Shared central tensors are declared as tied weights (``_tied_weights_keys``: every
``...layer.<i>.<matrix>.central`` is tied to ``bert.encoder.central.<matrix>``), so
``save_pretrained`` writes each once and ``from_pretrained`` re-ties them: one parameter,
one gradient. Importing ``tnlm_models`` registers the classes with ``AutoConfig``,
``AutoModel``, ``AutoModelForMaskedLM``, ``AutoModelForSequenceClassification`` and
``AutoTokenizer`` when ``transformers``' auto classes are first imported (importing them
eagerly would add seconds to ``import tnlm_models``).

``from_pretrained`` takes a folder written by ``save_pretrained`` here, a checkpoint folder
of the trainer or a run folder (its best, else latest, checkpoint; project folders are read
by the project's loader, bit-exactly). So that the auto classes take the same folders,
``register`` also teaches ``transformers``' config reader (``_get_config_dict``, the one
function every ``from_pretrained`` reads ``config.json`` through) two things, as it already
does for timm's configs: a project run folder means its best, else latest, checkpoint, and
a project ``config.json`` without ``model_type`` (written before this module) is "mpobert".
Nothing is written to the folder; every other folder reads as before.
"""

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import transformers
from torch import nn

if int(transformers.__version__.split(".")[0]) < 5:
    raise ImportError(
        f"tnlm_models.hf needs transformers>=5 (its tied-weight and initialisation API), "
        f"found {transformers.__version__}"
    )

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import initialization as hf_init
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from .config import MPOBertConfig
from .modeling import (
    MPOBertForMaskedLM,
    MPOBertForSequenceClassification,
    MPOBertLMHead,
    MPOBertModel,
    MPOBertPreTrainedModel,
)
from .mpo_linear import MPOLinear
from .serialization import CONFIG_NAME, WEIGHTS_NAME, _model_dir, read_json_object
from .tokenization import SPECIAL_TOKENS, TOKENIZER_FILE
from .train.checkpoint import INDEX

__all__ = [
    "MODEL_TYPE",
    "MPOBertHFConfig",
    "MPOBertHFPreTrainedModel",
    "MPOBertHFModel",
    "MPOBertHFForMaskedLM",
    "MPOBertHFForSequenceClassification",
    "MPOBertTokenizerFast",
    "load_tokenizer",
    "model_folder",
    "register",
    "shared_parameter_names",
]

logger = logging.getLogger(__name__)

MODEL_TYPE = "mpobert"


class MPOBertHFConfig(PretrainedConfig):
    """``MPOBertConfig`` as a ``transformers`` config (the same fields, checked the same way).

    ``num_labels`` is Hugging Face's (from ``id2label``); ``factorizations`` None means
    ``{}`` and ``mpo_matrices`` None all six matrices. ``to_mpobert_config()`` gives the
    project's config; construction fails as ``MPOBertConfig`` would for a bad value.

    Examples
    --------
    >>> from tnlm_models.testing import tiny_config
    >>> hf = MPOBertHFConfig.from_mpobert_config(tiny_config())
    >>> hf.model_type, hf.to_mpobert_config() == tiny_config()
    ('mpobert', True)
    """

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    embedding_size: int | None = None
    num_cores: int = 5
    factorizations: dict | None = None
    factorization_rule: str = "paper"
    bond_dim: int | None = None
    mpo_matrices: list | tuple | None = None
    sharing: str = "central"
    adapter_size: int = 8
    init_scheme: str = "depth_scaled"
    forward_mode: str = "auto"
    # the MLM decoder is the word-embedding table; also makes transformers honour the
    # central-tensor ties in _tied_weights_keys
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.to_mpobert_config()  # validate once, with the project's messages

    def to_mpobert_config(self) -> MPOBertConfig:
        """The project's ``MPOBertConfig`` with these settings."""
        d = {name: getattr(self, name) for name in _SHARED_FIELDS}
        d["num_labels"] = self.num_labels
        d["factorizations"] = d["factorizations"] or {}
        if d["mpo_matrices"] is None:
            del d["mpo_matrices"]
        else:
            d["mpo_matrices"] = tuple(d["mpo_matrices"])
        return MPOBertConfig.from_dict(d)

    @classmethod
    def from_mpobert_config(cls, config: MPOBertConfig, **kwargs: Any) -> "MPOBertHFConfig":
        """The ``transformers`` config of a project ``MPOBertConfig``."""
        if not isinstance(config, MPOBertConfig):
            raise TypeError(f"config must be an MPOBertConfig, got {type(config).__name__}")
        d = config.to_dict()
        d.update(kwargs)
        return cls(**d)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Read a ``transformers`` config dict or the project's ``config.json`` layout.

        Raises
        ------
        ValueError
            If the dict names another ``model_type`` (e.g. a dense BERT folder).
        """
        model_type = config_dict.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"config has model_type {model_type!r}, expected {MODEL_TYPE!r} (an MPOBERT "
                "folder); convert a dense BERT with MPOBertForMaskedLM.from_bert"
            )
        if "format_version" in config_dict and isinstance(config_dict.get("config"), dict):
            config_dict = _flat_config(config_dict)
        # a saved config without factorization_rule predates the paper's table
        config_dict = {"factorization_rule": "balanced", **config_dict}
        return super().from_dict(dict(config_dict), **kwargs)


#: MPOBertConfig fields held as fields of MPOBertHFConfig (num_labels is transformers').
_SHARED_FIELDS: tuple[str, ...] = tuple(
    name for name in MPOBertConfig.__dataclass_fields__ if name != "num_labels"
)


def _flat_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The project's ``{"architecture", "format_version", "config"}`` as a flat dict."""
    flat = dict(raw["config"])
    arch = str(raw.get("architecture", ""))
    if arch in _HF_NAMES:
        flat["architectures"] = [_HF_NAMES[arch]]
    return flat


def shared_parameter_names(model: nn.Module) -> dict[str, str]:
    """``{name: canonical name}`` for every parameter name after the first of a tensor.

    Under "central" sharing these are the layers' ``...<matrix>.central`` names, each mapped
    to ``encoder.central.<matrix>`` (with the model's prefix).
    """
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def model_folder(path: str | os.PathLike) -> Path:
    """The folder holding ``config.json``: ``path``, or a run folder's best (else latest)
    checkpoint. The auto classes resolve a run folder the same way (see ``register``)."""
    return _model_dir(Path(path))


def _run_checkpoint(path: Any) -> Path | None:
    """The best (else latest) checkpoint of ``path`` if it is a local project run folder (no
    ``config.json``; an ``index.json`` or a ``checkpoints`` folder), else None.

    Raises
    ------
    FileNotFoundError, ValueError
        From ``model_folder`` when the run's index is missing, corrupt or names a folder
        that is not one of its checkpoints.
    """
    if not isinstance(path, str | os.PathLike):
        return None
    folder = Path(path)
    if not folder.is_dir() or (folder / CONFIG_NAME).exists():
        return None
    if not ((folder / INDEX).is_file() or (folder / "checkpoints").is_dir()):
        return None
    return model_folder(folder)


def _is_project_config(raw: dict[str, Any]) -> bool:
    """Whether ``raw`` is the project's ``config.json`` layout of an MPOBERT model."""
    return (
        "format_version" in raw
        and isinstance(raw.get("config"), dict)
        and raw.get("architecture") in _HF_NAMES
    )


def _project_folder(path: Any) -> Path | None:
    """The checkpoint folder if ``path`` is a project run or checkpoint folder, else None."""
    if not isinstance(path, str | os.PathLike) or not Path(path).is_dir():
        return None
    folder = Path(path)
    if not (folder / CONFIG_NAME).is_file():
        return _model_dir(folder)  # a run folder, or FileNotFoundError naming what is missing
    raw = read_json_object(folder / CONFIG_NAME)
    return folder if "format_version" in raw and isinstance(raw.get("config"), dict) else None


#: the base model's parts (after an optional "bert." prefix) whose stored shapes are checked
_BASE_PARTS = ("embeddings.", "encoder.", "pooler.")


def _stored_shapes(folder: Path) -> tuple[Path, dict[str, tuple[int, ...]]] | None:
    """``(file, {key: shape})`` of the folder's safetensors weights (one file or the shards
    an index names), or None when it has none."""
    from safetensors import safe_open

    single = folder / WEIGHTS_NAME
    index = folder / f"{WEIGHTS_NAME}.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' object; expected a shard index")
        files = [folder / name for name in sorted(set(map(str, weight_map.values())))]
    else:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return (single if single.is_file() else index), shapes


def _mpo_settings(cfg: MPOBertConfig) -> str:
    """The settings that fix the stored shapes, for error messages."""
    return (
        f"hidden_size={cfg.hidden_size}, num_hidden_layers={cfg.num_hidden_layers}, "
        f"num_cores={cfg.num_cores}, bond_dim={cfg.bond_dim}, sharing={cfg.sharing!r}, "
        f"adapter_size={cfg.adapter_size}, mpo_matrices={list(cfg.mpo_matrices)}"
    )


def _check_stored_shapes(folder: Path, model: MPOBertPreTrainedModel) -> None:
    """``ValueError`` unless the folder stores the encoder tensors that ``model`` (built from
    the config) has, each with the model's shape (embeddings and pooler shapes too).

    A shared tensor may be stored under any of its names; the heads are left to
    ``transformers`` (a new ``num_labels`` re-initialises the classifier).
    """
    found = _stored_shapes(folder)
    if found is None:
        return
    path, raw = found
    stored = {k.removeprefix("bert."): v for k, v in raw.items()}
    stored_name = {k.removeprefix("bert."): k for k in raw}
    groups: dict[int, list[str]] = {}
    params: dict[str, tuple[int, ...]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        base = name.removeprefix("bert.")
        groups.setdefault(id(p), []).append(base)
        params[base] = tuple(p.shape)
    cfg = model.config
    for key, shape in stored.items():
        if key in params and key.startswith(_BASE_PARTS) and shape != params[key]:
            raise ValueError(
                f"{path}: {stored_name[key]} has shape {shape}, but the config "
                f"({_mpo_settings(cfg)}) gives {params[key]}; the config does not match the "
                "weights"
            )
    missing = [
        names[0]
        for names in groups.values()
        if names[0].startswith("encoder.") and not any(n in stored for n in names)
    ]
    unexpected = [stored_name[k] for k in stored if k.startswith("encoder.") and k not in params]
    if missing or unexpected:
        raise ValueError(
            f"{path}: the stored encoder tensors are not those the config "
            f"({_mpo_settings(cfg)}) gives: {len(missing)} missing {sorted(missing)[:3]}, "
            f"{len(unexpected)} unexpected {sorted(unexpected)[:3]}; the config does not "
            "match the weights"
        )


class MPOBertHFPreTrainedModel(PreTrainedModel):
    """Base of the wrappers: builds (or adopts) the project model and registers its parts.

    Parameters
    ----------
    config : MPOBertHFConfig
    model : MPOBertPreTrainedModel, optional
        An existing project model of the class this wrapper wraps, adopted as is (its
        parameters are shared, not copied); by default a new one is built from ``config``.
    """

    config_class = MPOBertHFConfig
    config: MPOBertHFConfig
    base_model_prefix = "bert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    project_class: ClassVar[type[MPOBertPreTrainedModel]]

    def __init__(
        self, config: MPOBertHFConfig, model: MPOBertPreTrainedModel | None = None
    ) -> None:
        if not isinstance(config, MPOBertHFConfig):
            raise TypeError(f"config must be an MPOBertHFConfig, got {type(config).__name__}")
        super().__init__(config)
        if model is None:
            model = self.project_class(config.to_mpobert_config())
        elif type(model) is not self.project_class:
            raise TypeError(
                f"model must be a {self.project_class.__name__}, got {type(model).__name__}"
            )
        elif model.config != config.to_mpobert_config():
            raise ValueError(
                f"the model's config {model.config} differs from config.to_mpobert_config() "
                f"{config.to_mpobert_config()}; expected the same settings"
            )
        # not registered as a child: its children are registered below, under its names
        object.__setattr__(self, "_mpobert_model", model)
        for name, child in model.named_children():
            self.add_module(name, child)
        # exact names (transformers reads the keys and values as patterns)
        self._tied_weights_keys = {
            f"{re.escape(k)}$": f"{re.escape(v)}$" for k, v in shared_parameter_names(model).items()
        }
        if any(p.device.type != "meta" for p in model.parameters()):
            # the project model is initialised (or loaded): transformers must not re-init it
            for module in self.modules():
                setattr(module, "_is_hf_initialized", True)  # noqa: B010
        self.post_init()

    def _adjust_bias(self, output_embeddings: Any, input_embeddings: Any) -> None:
        # transformers pads a tied output layer's bias to its weight's rows after every tie;
        # our ties are the shared central tensors inside MPOLinear layers, whose bias needs
        # nothing, and whose ``weight`` would rebuild the whole matrix (and warn) per tie
        if isinstance(output_embeddings, MPOLinear):
            return
        super()._adjust_bias(output_embeddings, input_embeddings)

    def __setattr__(self, name: str, value: Any) -> None:
        # a part replaced here (PEFT wraps the classifier, for one) is replaced in the
        # project model too, whose forward runs
        super().__setattr__(name, value)
        model = self.__dict__.get("_mpobert_model")
        if model is not None and isinstance(value, nn.Module) and name in model._modules:
            setattr(model, name, value)

    @property
    def mpobert_model(self) -> MPOBertPreTrainedModel:
        """The project's model (same parameters as this wrapper)."""
        return cast(MPOBertPreTrainedModel, self.__dict__["_mpobert_model"])

    def get_input_embeddings(self) -> nn.Module:
        # the encoder (an MPOBertModel is its own .bert)
        bert: Any = self.mpobert_model.bert  # type: ignore[attr-defined]
        return cast(nn.Module, bert.embeddings.word_embeddings)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise parameters the checkpoint lacked (``transformers`` calls this)."""
        std = self.config.initializer_range
        if isinstance(module, MPOLinear):
            own = list(module.parameters(recurse=False))
            if not all(getattr(p, "_is_hf_initialized", False) for p in own):
                central_done = getattr(module.central, "_is_hf_initialized", False)
                module.reset_parameters(std, init_central=not central_done)
        elif isinstance(module, MPOBertLMHead):
            hf_init.zeros_(module.bias)
        elif isinstance(module, nn.ParameterDict):  # encoder.central
            for p in module.values():
                hf_init.normal_(p, mean=0.0, std=std)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Load a ``save_pretrained`` folder (through ``transformers``), or a project
        checkpoint or run folder (through the project's loader).

        Raises
        ------
        ValueError
            For a folder of another ``model_type`` (also when ``config`` is given), or
            weights that the config's MPO settings do not give (a tensor of another shape,
            or encoder tensors missing or unexpected: the tensors and settings are named).
        """
        folder = _project_folder(pretrained_model_name_or_path)
        if folder is not None:
            return cls._from_project_folder(folder, kwargs.get("config"), kwargs)
        path = pretrained_model_name_or_path
        if isinstance(path, str | os.PathLike) and (Path(path) / CONFIG_NAME).is_file():
            stored = MPOBertHFConfig.from_pretrained(path)  # refuses another model_type
            config = kwargs.get("config")
            cls._check_folder(Path(path), config if isinstance(config, MPOBertHFConfig) else stored)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _check_folder(cls, folder: Path, config: MPOBertHFConfig) -> None:
        """``ValueError`` if the stored tensors' shapes are not those ``config`` gives."""
        with torch.device("meta"):
            probe = cls.project_class(config.to_mpobert_config())
        _check_stored_shapes(folder, probe)

    @classmethod
    def _from_project_folder(cls, folder: Path, config: Any, kwargs: dict[str, Any]) -> Any:
        if config is not None and not isinstance(config, MPOBertHFConfig):
            raise TypeError(f"config must be an MPOBertHFConfig, got {type(config).__name__}")
        if config is None:
            fields = {k: v for k, v in kwargs.items() if k in _SHARED_FIELDS or k == "num_labels"}
            config = MPOBertHFConfig.from_pretrained(folder, **fields)
        cls._check_folder(folder, config)
        _set_labels(config, folder)
        overrides = config.to_mpobert_config().to_dict()
        model = cls.project_class.from_pretrained(folder, **overrides)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        wrapper = cls(config, model=model)
        wrapper.eval()
        if kwargs.get("output_loading_info"):
            # the project loader refuses missing or unexpected keys within a class
            info: dict[str, list[str]] = {"missing_keys": [], "unexpected_keys": []}
            return wrapper, {**info, "mismatched_keys": [], "error_msgs": []}
        return wrapper


def _set_labels(config: MPOBertHFConfig, folder: Path) -> None:
    """Name the classes after a fine-tuned checkpoint's label list (``trainer_state.json``)
    when the config has only the default names ``LABEL_<i>``."""
    state = folder / "trainer_state.json"
    n = int(config.num_labels or 0)
    if not state.is_file() or config.id2label != {i: f"LABEL_{i}" for i in range(n)}:
        return
    labels = read_json_object(state).get("label_list")
    if isinstance(labels, list) and len(labels) == n and all(isinstance(x, str) for x in labels):
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}


def _output_hidden(flag: bool | None, config: PretrainedConfig) -> bool:
    return bool(config.output_hidden_states if flag is None else flag)


def _check_unsupported(inputs_embeds: Any, output_attentions: bool | None) -> None:
    """Accept the arguments ``transformers`` and PEFT pass as None, refuse real values."""
    if inputs_embeds is not None:
        raise ValueError("MPOBERT takes input_ids; inputs_embeds is not supported (got a value)")
    if output_attentions:
        raise ValueError(
            "MPOBERT does not return attention weights; output_attentions must be None or False"
        )


class MPOBertHFModel(MPOBertHFPreTrainedModel):
    """``MPOBertModel`` (encoder and pooler) for ``AutoModel``."""

    project_class = MPOBertModel

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> Any:
        """As ``MPOBertModel.forward``; returns ``BaseModelOutputWithPooling``."""
        _check_unsupported(inputs_embeds, output_attentions)
        out = self.mpobert_model(
            input_ids,
            attention_mask,
            token_type_ids,
            _output_hidden(output_hidden_states, self.config),
        )
        result = BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=out.pooler_output,
            hidden_states=out.hidden_states,
        )
        return result if return_dict is not False else result.to_tuple()


class MPOBertHFForMaskedLM(MPOBertHFPreTrainedModel):
    """``MPOBertForMaskedLM`` for ``AutoModelForMaskedLM`` and the fill-mask pipeline."""

    project_class = MPOBertForMaskedLM

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> Any:
        """As ``MPOBertForMaskedLM.forward``; returns ``MaskedLMOutput``."""
        _check_unsupported(inputs_embeds, output_attentions)
        out = self.mpobert_model(
            input_ids,
            attention_mask,
            token_type_ids,
            labels,
            _output_hidden(output_hidden_states, self.config),
        )
        result = MaskedLMOutput(loss=out.loss, logits=out.logits, hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()


class MPOBertHFForSequenceClassification(MPOBertHFPreTrainedModel):
    """``MPOBertForSequenceClassification`` for ``AutoModelForSequenceClassification``."""

    project_class = MPOBertForSequenceClassification

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> Any:
        """As ``MPOBertForSequenceClassification.forward``; returns
        ``SequenceClassifierOutput``."""
        _check_unsupported(inputs_embeds, output_attentions)
        out = self.mpobert_model(
            input_ids,
            attention_mask,
            token_type_ids,
            labels,
            _output_hidden(output_hidden_states, self.config),
        )
        result = SequenceClassifierOutput(
            loss=out.loss, logits=out.logits, hidden_states=out.hidden_states
        )
        return result if return_dict is not False else result.to_tuple()


#: project class name -> wrapper class name (for ``architectures``)
_HF_NAMES: dict[str, str] = {
    "MPOBertModel": "MPOBertHFModel",
    "MPOBertForMaskedLM": "MPOBertHFForMaskedLM",
    "MPOBertForSequenceClassification": "MPOBertHFForSequenceClassification",
}


class MPOBertTokenizerFast(PreTrainedTokenizerFast):
    """A ``PreTrainedTokenizerFast`` whose special tokens default to BERT's (those of the
    project's WordPiece tokenizer), so ``AutoTokenizer.from_pretrained(folder)`` reads a
    checkpoint's ``tokenizer.json`` as it is (no ``__init__`` here: transformers then loads
    the file instead of rebuilding a tokenizer from its vocabulary)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """As ``PreTrainedTokenizerFast.from_pretrained``; a run folder means its best, else
        latest, checkpoint."""
        for key, token in _SPECIAL_TOKEN_KWARGS.items():
            kwargs.setdefault(key, token)
        path = pretrained_model_name_or_path
        if not kwargs.get("subfolder"):
            path = _run_checkpoint(path) or path
        return super().from_pretrained(path, *args, **kwargs)


_SPECIAL_TOKEN_KWARGS: dict[str, str] = dict(
    zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS)
)


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The ``PreTrainedTokenizerFast`` of a checkpoint, run or ``save_pretrained`` folder.

    Its ``model_max_length`` is the model's ``max_position_embeddings`` when the folder has a
    config. ``tokenizer.save_pretrained(folder)`` then writes ``tokenizer_config.json``.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``tokenizer.json``.
    """
    folder = Path(path)
    if not (folder / TOKENIZER_FILE).is_file():
        folder = model_folder(folder)
    file = folder / TOKENIZER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder}")
    kwargs: dict[str, Any] = {}
    if (folder / CONFIG_NAME).is_file():
        raw = read_json_object(folder / CONFIG_NAME)
        cfg = raw.get("config", raw)
        if isinstance(cfg, dict) and isinstance(cfg.get("max_position_embeddings"), int):
            kwargs["model_max_length"] = cfg["max_position_embeddings"]
    return MPOBertTokenizerFast(tokenizer_file=str(file), **_SPECIAL_TOKEN_KWARGS, **kwargs)


def _read_project_folders(read: Any) -> Any:
    """``PretrainedConfig._get_config_dict`` (the function ``read``) that also reads a project
    run folder (its best, else latest, checkpoint) and gives a project ``config.json``
    without ``model_type`` the type "mpobert". Reads only; other folders as before."""

    @functools.wraps(read)
    def _get_config_dict(cls: Any, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        if not kwargs.get("subfolder") and not kwargs.get("gguf_file"):
            pretrained_model_name_or_path = (
                _run_checkpoint(pretrained_model_name_or_path) or pretrained_model_name_or_path
            )
        config_dict, rest = read(cls, pretrained_model_name_or_path, **kwargs)
        if (
            isinstance(config_dict, dict)
            and "model_type" not in config_dict
            and _is_project_config(config_dict)
        ):
            config_dict["model_type"] = MODEL_TYPE
        return config_dict, rest

    _get_config_dict.reads_project_folders = True  # type: ignore[attr-defined]
    return _get_config_dict


def _install_config_reader() -> None:
    """Wrap ``PretrainedConfig._get_config_dict`` once (see ``_read_project_folders``)."""
    current = PretrainedConfig.__dict__.get("_get_config_dict")
    read = getattr(current, "__func__", None)
    if read is None:
        logger.warning(
            "transformers %s has no PretrainedConfig._get_config_dict: the auto classes take "
            "no run folder (pass tnlm_models.hf.model_folder(run)) and no config.json "
            "without model_type",
            transformers.__version__,
        )
        return
    if not getattr(read, "reads_project_folders", False):
        PretrainedConfig._get_config_dict = classmethod(_read_project_folders(read))  # type: ignore[assignment,method-assign]


def register() -> None:
    """Register the "mpobert" classes with ``transformers``' auto classes (idempotent), and
    let its config reader take project run folders and older project ``config.json`` files
    (module docstring)."""
    _install_config_reader()
    AutoConfig.register(MODEL_TYPE, MPOBertHFConfig, exist_ok=True)
    for auto, cls in (
        (AutoModel, MPOBertHFModel),
        (AutoModelForMaskedLM, MPOBertHFForMaskedLM),
        (AutoModelForSequenceClassification, MPOBertHFForSequenceClassification),
    ):
        auto.register(MPOBertHFConfig, cls, exist_ok=True)
    AutoTokenizer.register(
        MPOBertHFConfig, fast_tokenizer_class=MPOBertTokenizerFast, exist_ok=True
    )
    logger.debug("registered model_type %r with transformers", MODEL_TYPE)


register()
