"""Conversion between Hugging Face BERT and the MPO BERT models.

``from_bert`` reads a pre-trained BERT (Hugging Face layout: a model object, a state dict,
a ``.safetensors``/``.bin`` file or a local directory with ``config.json``; nothing is ever
downloaded) and builds an MPO model at the same depth or a greater one, with the "clone" or
"fit" initialisation (tnlm's ``mpo_decompose`` and ``shared_mpo_decompose``). ``to_bert``
materialises any MPO model into the dense ``transformers`` ``BertForMaskedLM`` /
``BertForSequenceClassification`` that computes the same logits.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import tnlm

from ._fields import Bounds, check_value
from .config import MATRIX_NAMES, MPOBertConfig
from .init import PRETRAINED_INITS, layer_map
from .mpo_linear import MPOLinear

__all__ = [
    "from_bert",
    "to_bert",
    "to_bert_state_dict",
    "load_bert_state",
    "ConversionReport",
    "HF_LAYER_KEYS",
]

logger = logging.getLogger(__name__)

#: Our matrix / norm names -> Hugging Face BERT layer sub-module names.
HF_LAYER_KEYS: dict[str, str] = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}
_EMBEDDING_KEYS = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
}
_PROJECTION_KEYS = {
    "embeddings.projection.weight": "embeddings.projection.weight",
    "embeddings.projection.bias": "embeddings.projection.bias",
}
_HEAD_KEYS = {
    "cls.predictions.transform.dense.weight": "head.transform.weight",
    "cls.predictions.transform.dense.bias": "head.transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "head.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "head.norm.bias",
    "cls.predictions.bias": "head.bias",
}
_POOLER_KEYS = {
    "pooler.dense.weight": "bert.pooler.weight",
    "pooler.dense.bias": "bert.pooler.bias",
}
_CLASSIFIER_KEYS = {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
# Keys a BERT checkpoint may carry that no MPO model needs.
_IGNORED = re.compile(
    r"^(embeddings\.position_ids|cls\.seq_relationship\..*|cls\.predictions\.decoder\..*)$"
)
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_BERT_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


@dataclass
class ConversionReport:
    """What ``from_bert`` did.

    Attributes
    ----------
    init : str
        "clone" or "fit".
    sharing : str
    layer_map : list of int
        Source layer of each target layer.
    relative_errors : dict
        ``{matrix: [||W_t - W'_t||_F / ||W_t||_F for each target layer t]}`` with
        ``W_t`` the mapped source layer's matrix and ``W'_t`` the converted layer's
        rebuilt weight.
    mean_relative_error : float
        The mean over matrices and layers.
    objectives : dict
        ``{matrix: objective history}`` ("central" sharing only): the summed squared error
        over the source layers at the start and after each sweep
        (``tnlm.SharedFitReport.objective``).
    sweeps, converged : dict
        ``{matrix: sweeps run}`` and ``{matrix: whether the fit met its tolerance}``
        ("central" sharing only).
    """

    init: str
    sharing: str
    layer_map: list[int]
    relative_errors: dict[str, list[float]] = field(default_factory=dict)
    mean_relative_error: float = 0.0
    objectives: dict[str, list[float]] = field(default_factory=dict)
    sweeps: dict[str, int] = field(default_factory=dict)
    converged: dict[str, bool] = field(default_factory=dict)


# ---------------------------------------------------------------------------- reading
def _normalise_keys(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        key = k.removeprefix("bert.")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v)
        out[key] = v
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".bin", ".pt", ".pth"):
        return torch.load(str(path), map_location="cpu", weights_only=True)
    raise ValueError(
        f"unsupported weights file {path.name!r}; expected .safetensors, .bin, .pt or .pth"
    )


_ALBERT_LAYER = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.dense": "attention.output.dense",
    "attention.LayerNorm": "attention.output.LayerNorm",
    "ffn": "intermediate.dense",
    "ffn_output": "output.dense",
    "full_layer_layer_norm": "output.LayerNorm",
}
_ALBERT_OTHER = {
    "encoder.embedding_hidden_mapping_in.": "embeddings.projection.",
    "predictions.dense.": "cls.predictions.transform.dense.",
    "predictions.LayerNorm.": "cls.predictions.transform.LayerNorm.",
    "predictions.decoder.": "cls.predictions.decoder.",
    "predictions.bias": "cls.predictions.bias",
    "pooler.": "pooler.dense.",
    "sop_classifier.classifier.": "cls.seq_relationship.",
}
_ALBERT_GROUP = re.compile(r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.(.+)$")


def _is_albert(state: Mapping[str, Any], hf: dict[str, Any] | None) -> bool:
    if hf is not None and hf.get("model_type") == "albert":
        return True
    return any(k.startswith("albert.") or "albert_layer_groups" in k for k in state)


def _albert_to_bert_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ALBERT keys -> BERT-layout keys with its one shared layer as ``encoder.layer.0``.

    The embedding projection becomes ``embeddings.projection.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        key = k.removeprefix("albert.")
        m = _ALBERT_GROUP.match(key)
        if m:
            group, inner, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            if group or inner:
                raise ValueError(
                    f"ALBERT key {k!r}: only num_hidden_groups=1 and inner_group_num=1 "
                    "(one shared layer) are supported"
                )
            sub, _, kind = rest.rpartition(".")
            if sub not in _ALBERT_LAYER:
                raise ValueError(f"unexpected ALBERT layer key {k!r}")
            out[f"encoder.layer.0.{_ALBERT_LAYER[sub]}.{kind}"] = v
            continue
        for old, new in _ALBERT_OTHER.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = v
    return out


def load_bert_state(source: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a BERT (or ALBERT) state dict and its Hugging Face config, in BERT layout.

    An ALBERT checkpoint (one shared layer) is translated to BERT keys with that layer as
    ``encoder.layer.0`` and the embedding projection as ``embeddings.projection``; its
    config dict keeps ``model_type="albert"``. See ``_load_raw`` for the sources accepted.
    """
    state, hf = _load_raw(source)
    if _is_albert(state, hf):
        state = _albert_to_bert_layout(state)
        hf = dict(hf or {}, model_type="albert")
    return state, hf


def _load_raw(source: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a BERT state dict and (where available) its Hugging Face config as a dict.

    Parameters
    ----------
    source : transformers model, state dict, file or directory
        A directory must hold ``config.json`` and ``model.safetensors`` or
        ``pytorch_model.bin``. Nothing is downloaded: a string that is not an existing
        path is an error.

    Returns
    -------
    (state, config) : (dict of str -> Tensor, dict or None)
        Keys normalised (no ``bert.`` prefix, ``gamma/beta`` -> ``weight/bias``).
    """
    if isinstance(source, torch.nn.Module):
        cfg = getattr(source, "config", None)
        cfg_dict = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else None
        return _normalise_keys(source.state_dict()), cfg_dict
    if isinstance(source, Mapping):
        return _normalise_keys(source), None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"{str(source)!r} is not an existing file or directory (tnlm_models never "
                "downloads: save the model locally first)"
            )
        cfg_dict = None
        if path.is_dir():
            cfg_path = path / "config.json"
            if cfg_path.is_file():
                cfg_dict = json.loads(cfg_path.read_text())
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (path / name).is_file():
                    return _normalise_keys(_read_weights(path / name)), cfg_dict
            raise FileNotFoundError(
                f"no model.safetensors or pytorch_model.bin in directory {path}"
            )
        cfg_path = path.parent / "config.json"
        if cfg_path.is_file():
            cfg_dict = json.loads(cfg_path.read_text())
        return _normalise_keys(_read_weights(path)), cfg_dict
    raise TypeError(
        "source must be a transformers model, a state dict, or a path to a file or directory, "
        f"got {type(source).__name__}"
    )


def _infer_bert_config(state: Mapping[str, torch.Tensor], hf: dict[str, Any] | None) -> dict:
    """BERT hyper-parameters from the HF config, or from the tensor shapes."""
    albert = hf is not None and hf.get("model_type") == "albert"
    if hf is not None and (not albert or "hidden_size" in hf):
        if hf.get("model_type", "bert") not in ("bert", "albert", None):
            raise ValueError(
                f"source model_type {hf.get('model_type')!r} is not supported; expected 'bert' "
                "or 'albert'"
            )
        for k in ("num_hidden_groups", "inner_group_num"):
            if hf.get(k, 1) != 1:
                raise ValueError(f"ALBERT with {k}={hf[k]} is not supported (expected 1)")
        pet = hf.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(
                f"position_embedding_type {pet!r} is not supported; expected 'absolute'"
            )
        found = {k: hf[k] for k in _BERT_CONFIG_FIELDS if k in hf}
        if albert:
            found["embedding_size"] = hf.get("embedding_size", 128)
            found["classifier_dropout"] = hf.get("classifier_dropout_prob")
        return found
    need = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"state dict lacks {missing}; is it a BERT (HF layout) state dict?")
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    d: dict[str, Any] = {}
    if "embeddings.projection.weight" in state:
        hidden, d["embedding_size"] = (int(x) for x in state["embeddings.projection.weight"].shape)
    d.update(
        {
            "vocab_size": int(vocab),
            "hidden_size": int(hidden),
            "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
            "num_hidden_layers": max(layers) + 1 if layers else 0,
        }
    )
    if "embeddings.token_type_embeddings.weight" in state:
        d["type_vocab_size"] = int(state["embeddings.token_type_embeddings.weight"].shape[0])
    key = "encoder.layer.0.intermediate.dense.weight"
    if key in state:
        d["intermediate_size"] = int(state[key].shape[0])
    return d


def _check_keys(state: Mapping[str, torch.Tensor], layers: int, strict: bool) -> None:
    required = list(_EMBEDDING_KEYS)
    for i in range(layers):
        for sub in HF_LAYER_KEYS.values():
            required += [f"encoder.layer.{i}.{sub}.weight", f"encoder.layer.{i}.{sub}.bias"]
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"pre-trained state dict is missing keys {missing}")
    known = (
        set(required)
        | set(_PROJECTION_KEYS)
        | set(_HEAD_KEYS)
        | set(_POOLER_KEYS)
        | set(_CLASSIFIER_KEYS)
    )
    unexpected = sorted(k for k in state if k not in known and not _IGNORED.match(k))
    if unexpected and strict:
        raise ValueError(
            f"pre-trained state dict has unexpected keys {unexpected} (pass strict=False to "
            "ignore them)"
        )


def _expect_shape(state: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> None:
    got = tuple(state[key].shape)
    if got != tuple(shape):
        raise ValueError(
            f"pre-trained tensor {key!r} has shape {got}, expected {tuple(shape)} for the config"
        )


# ---------------------------------------------------------------------------- from_bert
def from_bert(
    source: Any,
    *,
    model_class: Any = None,
    num_hidden_layers: int | None = None,
    init: str = "fit",
    clone_layer: int = 0,
    als_iterations: int = 20,
    strict: bool = True,
    **config_kwargs: Any,
) -> Any:
    """Build an MPO BERT from a pre-trained Hugging Face BERT.

    Parameters
    ----------
    source : transformers model, state dict, file or directory
        See ``load_bert_state``. Without a Hugging Face config the BERT hyper-parameters are
        inferred from the tensor shapes, except ``num_attention_heads`` (pass it).
    model_class : type, default MPOBertForMaskedLM
    num_hidden_layers : int, optional
        Target depth (default: the source's). Target layer ``t`` is initialised from source
        layer ``floor(t * S / T)`` (see ``tnlm_models.init.layer_map``).
    init : {"clone", "fit"}
        "clone": decompose source layer ``clone_layer`` and copy its MPO (auxiliary tensors,
        and under "central" sharing the shared central tensor) to every layer.
        "fit": under "central" sharing, fit a shared central tensor and per-layer auxiliary
        tensors to all source layers jointly (``tnlm.shared_mpo_decompose``: alternating
        least squares, at most ``als_iterations`` sweeps, stopped when a sweep lowers the
        summed squared error by less than a relative 1e-4); under "none", decompose
        every mapped layer on its own; under "all", decompose the mean of the layers (the
        least-squares optimum of one shared layer at full rank).
    clone_layer : int, default 0
    als_iterations : int, default 20
        Most sweeps of the "fit" under "central" sharing.
    strict : bool, default True
        Reject keys that are not BERT's (named in the error).
    **config_kwargs
        ``MPOBertConfig`` fields: MPO settings (``sharing``, ``num_cores``, ``bond_dim``,
        ``factorizations``, ``mpo_matrices``, ``adapter_size``, ...), ``num_labels``, or
        BERT fields that override the source's (e.g. dropout).

    Returns
    -------
    model
        With ``model.conversion_report`` (a ``ConversionReport``). Biases, LayerNorms,
        embeddings and the MLM head (or pooler/classifier where the source has them) are
        copied; adapters start at zero. At full bond dimension with "none" sharing (or one
        source layer cloned) the model computes the source's logits.
    """
    from .modeling import MPOBertForMaskedLM

    model_class = model_class or MPOBertForMaskedLM
    clone_layer = check_value("clone_layer", clone_layer, int, "from_bert argument", Bounds(0))
    als_iterations = check_value(
        "als_iterations", als_iterations, int, "from_bert argument", Bounds(0)
    )
    if init not in PRETRAINED_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(PRETRAINED_INITS)}")
    state, hf = load_bert_state(source)
    bert_kw = _infer_bert_config(state, hf)
    src_layers = int(bert_kw.get("num_hidden_layers", 0))
    if hf is not None and hf.get("model_type") == "albert":
        # ALBERT: one distinct (shared) source layer; its depth is the default target depth.
        src_layers = 1 if any(_LAYER.match(k) for k in state) else 0
        bert_kw.setdefault("num_hidden_layers", src_layers)
    if src_layers < 1:
        raise ValueError("pre-trained state dict has no encoder layers (encoder.layer.<i>.*)")
    kw = dict(bert_kw)
    if "classifier.weight" in state:
        kw["num_labels"] = int(state["classifier.weight"].shape[0])
    kw.update(config_kwargs)
    if "num_attention_heads" not in kw:
        raise ValueError(
            "num_attention_heads cannot be inferred from a state dict; pass "
            "num_attention_heads=... (or a source with a config)"
        )
    kw["num_hidden_layers"] = (
        num_hidden_layers
        if num_hidden_layers is not None
        else bert_kw["num_hidden_layers"] or src_layers
    )
    config = MPOBertConfig(**kw)
    if config.num_hidden_layers < src_layers:
        raise ValueError(
            f"num_hidden_layers={config.num_hidden_layers} is fewer than the source's "
            f"{src_layers} layers; from_bert builds a model of the same depth or a greater one "
            "(it would otherwise drop source layers)"
        )
    if config.hidden_size != bert_kw["hidden_size"]:
        raise ValueError(
            f"hidden_size={config.hidden_size} does not match the source's {bert_kw['hidden_size']}"
        )
    if config.init_scheme == "deepnorm":
        raise ValueError(
            'init_scheme="deepnorm" scales every residual connection (alpha * x + f(x)), which '
            "a pre-trained BERT was not trained with; convert with another init_scheme"
        )
    _check_keys(state, src_layers, strict)
    if not 0 <= clone_layer < src_layers:
        raise ValueError(f"clone_layer={clone_layer} outside [0, {src_layers})")
    e = config.embedding_width
    for k in _EMBEDDING_KEYS:
        shape = {
            "embeddings.word_embeddings.weight": (config.vocab_size, e),
            "embeddings.position_embeddings.weight": (config.max_position_embeddings, e),
            "embeddings.token_type_embeddings.weight": (config.type_vocab_size, e),
        }.get(k, (e,))
        _expect_shape(state, k, shape)
    if config.embedding_size is not None:
        for k in _PROJECTION_KEYS:
            if k not in state:
                raise ValueError(f"pre-trained state dict is missing keys ['{k}']")
        _expect_shape(state, "embeddings.projection.weight", (config.hidden_size, e))
    for i in range(src_layers):
        for name in MATRIX_NAMES:
            out_f, in_f = config.matrix_shape(name)
            pre = f"encoder.layer.{i}.{HF_LAYER_KEYS[name]}"
            _expect_shape(state, pre + ".weight", (out_f, in_f))
            _expect_shape(state, pre + ".bias", (out_f,))

    model = model_class(config)
    report = _load_into(model, state, src_layers, init, clone_layer, als_iterations)
    model.conversion_report = report
    logger.info(
        "from_bert: %d -> %d layers, init=%s, sharing=%s, mean relative error %.3g",
        src_layers,
        config.num_hidden_layers,
        init,
        config.sharing,
        report.mean_relative_error,
    )
    return model


@torch.no_grad()
def _load_into(
    model: Any, state: dict, src_layers: int, init: str, clone_layer: int, iterations: int
) -> ConversionReport:
    cfg = model.config
    params = dict(model.unique_named_parameters())
    prefix = "bert." if hasattr(model, "bert") and model.bert is not model else ""

    def put(name: str, value: torch.Tensor) -> None:
        p = params[name]
        p.copy_(value.to(dtype=p.dtype, device=p.device))

    for src, dst in _EMBEDDING_KEYS.items():
        put(prefix + dst, state[src])
    if cfg.embedding_size is not None:
        for src, dst in _PROJECTION_KEYS.items():
            put(prefix + dst, state[src])
    for group in (_HEAD_KEYS, _POOLER_KEYS, _CLASSIFIER_KEYS):
        for src, dst in group.items():
            dst = dst if prefix else dst.removeprefix("bert.")
            if dst in params and src in state:
                if tuple(state[src].shape) != tuple(params[dst].shape):
                    raise ValueError(
                        f"pre-trained tensor {src!r} has shape {tuple(state[src].shape)}, "
                        f"expected {tuple(params[dst].shape)}"
                    )
                put(dst, state[src])
            elif dst in params:
                logger.info("from_bert: %s not in the source, initialised fresh", src)

    def src_tensor(i: int, sub: str, kind: str) -> torch.Tensor:
        return state[f"encoder.layer.{i}.{sub}.{kind}"]

    tmap = layer_map(src_layers, cfg.num_hidden_layers)
    enc = model.encoder_module()
    report = ConversionReport(init=init, sharing=cfg.sharing, layer_map=tmap)
    # The encoder says which module computes which layers. A module computing one layer t
    # takes source layer tmap[t]; one computing several (sharing="all") takes clone_layer
    # under "clone", else the mean of their source layers (the least-squares optimum of one
    # shared layer). Under "clone" every MPO matrix is clone_layer's.
    groups = []
    for module, layers in enc.layer_groups():
        srcs = sorted({tmap[t] for t in layers})
        if init == "clone" and len(layers) > 1:
            srcs = [clone_layer]
        groups.append((module, layers, srcs))
    for module, _, srcs in groups:
        for name, sub in HF_LAYER_KEYS.items():
            mod = getattr(module, name)
            mod.bias.copy_(_mean([src_tensor(i, sub, "bias") for i in srcs]))
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(_mean([src_tensor(i, sub, "weight") for i in srcs]))
            elif not isinstance(mod, MPOLinear):
                mod.weight.copy_(_mean([src_tensor(i, sub, "weight") for i in srcs]))

    for name in MATRIX_NAMES:
        if not cfg.is_mpo(name):
            continue
        sub = HF_LAYER_KEYS[name]
        shape = cfg.factorization(name)
        weights = [src_tensor(i, sub, "weight") for i in range(src_layers)]
        central = enc.shared_central(name)
        if central is not None:
            # tnlm's joint fit: one shared central core, per-layer auxiliary cores; "clone"
            # is its start (clone_layer's decomposition for every layer), "fit" its sweeps
            mpos, fit = tnlm.shared_mpo_decompose(
                weights,
                shape,
                cfg.bond_dim,
                init="clone" if init == "clone" else "auto",
                start=clone_layer,
                max_sweeps=0 if init == "clone" else iterations,
            )
            central.copy_(mpos[0].cores[mpos[0].central_index])
            report.objectives[name] = list(fit.objective)
            report.sweeps[name], report.converged[name] = fit.sweeps, fit.converged
            errors = list(fit.relative_errors)  # of each source layer's own cores
            for module, layers, _ in groups:
                module.linear(name).set_cores(mpos[tmap[layers[0]]].cores)
        else:  # each module its own decomposition
            errors = [0.0] * src_layers
            done: dict[tuple[int, ...], tnlm.MPO] = {}  # modules of one source share it
            for module, layers, srcs in groups:
                key = (clone_layer,) if init == "clone" else tuple(srcs)
                if key not in done:
                    done[key] = _decompose(_mean([weights[i] for i in key]), shape, cfg.bond_dim)
                mpo = done[key]
                module.linear(name).set_cores(mpo.cores)
                for i in {tmap[t] for t in layers}:
                    errors[i] = _relative_error(mpo, weights[i])
        report.relative_errors[name] = [errors[s] for s in tmap]
    all_errs = [e for v in report.relative_errors.values() for e in v]
    report.mean_relative_error = sum(all_errs) / len(all_errs) if all_errs else 0.0
    return report


def _mean(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(weights).mean(0)


def _decompose(w: torch.Tensor, shape: Any, bond_dim: Any) -> tnlm.MPO:
    """``w``'s TT-SVD (``tnlm.mpo_decompose``) with every bond at the layer's dimension:
    ``shared_mpo_decompose`` of one matrix without a sweep is exactly that, its bonds
    zero-padded where the numerical rank is lower."""
    mpos, _ = tnlm.shared_mpo_decompose([w], shape, bond_dim, init="clone", max_sweeps=0)
    return mpos[0]


def _relative_error(mpo: tnlm.MPO, w: torch.Tensor) -> float:
    """``||W - W'||_F / ||W||_F`` of the rebuilt ``mpo``."""
    w64 = w.double()
    return float(torch.linalg.norm(mpo.to_dense().double() - w64) / torch.linalg.norm(w64))


# ---------------------------------------------------------------------------- export
def to_bert_config(config: MPOBertConfig, task: str = "mlm") -> Any:
    """The ``transformers.BertConfig`` of the dense equivalent."""
    from transformers import BertConfig

    kw = {k: getattr(config, k) for k in _BERT_CONFIG_FIELDS}
    kw["num_labels"] = config.num_labels
    if task == "cls":
        kw["problem_type"] = (
            "regression" if config.num_labels == 1 else "single_label_classification"
        )
        kw["classifier_dropout"] = config.classifier_dropout
    return BertConfig(**kw)


@torch.no_grad()
def to_bert_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """Dense Hugging Face BERT state dict of ``model`` (every layer materialised).

    MPO weights are rebuilt (adapters included), shared tensors copied into every layer.
    """
    cfg = model.config
    if cfg.embedding_size is not None:
        raise ValueError(
            f"a model with a factorised embedding (embedding_size={cfg.embedding_size}, as "
            "converted from ALBERT) has no dense BERT equivalent: BERT applies its embedding "
            "LayerNorm at hidden width"
        )
    out: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters(remove_duplicate=False))
    prefix = "bert." if hasattr(model, "bert") and model.bert is not model else ""
    for hf, ours in _EMBEDDING_KEYS.items():
        out["bert." + hf] = params[prefix + ours].detach().clone()
    enc = model.encoder_module()
    for t in range(cfg.num_hidden_layers):
        layer = enc.layer_module(t)
        for name, sub in HF_LAYER_KEYS.items():
            mod = getattr(layer, name)
            w = mod.rebuild_weight() if isinstance(mod, MPOLinear) else mod.weight
            out[f"bert.encoder.layer.{t}.{sub}.weight"] = w.detach().clone()
            out[f"bert.encoder.layer.{t}.{sub}.bias"] = mod.bias.detach().clone()
    for group in (_HEAD_KEYS, _POOLER_KEYS, _CLASSIFIER_KEYS):
        for hf, ours in group.items():
            ours = ours if prefix else ours.removeprefix("bert.")
            if ours in params:
                key = hf if hf.startswith(("cls.", "classifier.")) else "bert." + hf
                out[key] = params[ours].detach().clone()
    if "head.bias" in params:
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    return out


def to_bert(model: Any) -> Any:
    """The dense ``transformers`` model equivalent to ``model`` (same logits).

    ``MPOBertForMaskedLM`` -> ``BertForMaskedLM``; ``MPOBertForSequenceClassification`` ->
    ``BertForSequenceClassification``; ``MPOBertModel`` -> ``BertModel``. The result is in
    eval mode, on the CPU, in the model's dtype; ``save_pretrained`` on it writes a
    checkpoint any ``transformers`` user can load.
    """
    import transformers

    kind = type(model).__name__
    classes = {
        "MPOBertForMaskedLM": ("BertForMaskedLM", "mlm"),
        "MPOBertForSequenceClassification": ("BertForSequenceClassification", "cls"),
        "MPOBertModel": ("BertModel", "mlm"),
    }
    if kind not in classes:
        raise TypeError(f"to_bert expects one of {', '.join(classes)}, got {kind}")
    cls_name, task = classes[kind]
    hf_config = to_bert_config(model.config, task)
    hf_cls = getattr(transformers, cls_name)
    if kind == "MPOBertModel":
        hf = hf_cls(hf_config, add_pooling_layer=model.pooler is not None)
    else:
        hf = hf_cls(hf_config)
    state = to_bert_state_dict(model)
    if kind == "MPOBertModel":
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    dtype = next(model.parameters()).dtype
    hf = hf.to(dtype)
    result = hf.load_state_dict({k: v.cpu() for k, v in state.items()}, strict=False)
    bad = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if bad or result.unexpected_keys:
        raise RuntimeError(  # pragma: no cover - internal consistency check
            f"dense export mismatch: missing {bad}, unexpected {result.unexpected_keys}"
        )
    return hf.eval()
