"""Benchmarks of tnlm_models: MPOLinear vs nn.Linear, a training step vs Hugging Face BERT,
and parameter counts against BERT-base/large and ALBERT.

Every contestant is timed on the same input inside one repeat loop (round-robin), so that
load on a shared machine hits all alike; reported numbers are medians over repeats and the
ratios are taken within the same run.

Usage::

    python benchmarks/bench_models.py --repeats 7 --out docs/bench_models.json
    python benchmarks/bench_models.py --quick          # a fast smoke run
    python benchmarks/bench_models.py --only convert --threads 1   # from_bert at BERT-base
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import round_robin
from torch import nn

from tnlm_models import MPOBertConfig, MPOBertForMaskedLM, MPOLinear

# ---------------------------------------------------------------------------- MPOLinear


def bench_linear(repeats: int, tokens: int, bonds: list[int | None], sweep: list[int]) -> list:
    rows = []
    for in_f, out_f in ((768, 768), (768, 3072)):
        torch.manual_seed(0)
        dense = nn.Linear(in_f, out_f)
        x = torch.randn(tokens, in_f, requires_grad=True)

        def step(mod: nn.Module, inp: torch.Tensor) -> Callable[[], None]:
            def run() -> None:
                mod.zero_grad(set_to_none=True)
                inp.grad = None
                mod(inp).sum().backward()

            return run

        for bond in bonds:
            mpo = MPOLinear(in_f, out_f, bond_dim=bond)
            fns = {"nn.Linear": step(dense, x)}
            for mode in ("auto", "dense", "cores"):
                m = MPOLinear(in_f, out_f, bond_dim=bond, forward_mode=mode)
                m.load_state_dict(mpo.state_dict())
                fns[f"mpo_{mode}"] = step(m, x)
            t = round_robin(fns, repeats)
            cost = mpo.cost(tokens)
            rows.append(
                {
                    "shape": f"{in_f}x{out_f}",
                    "tokens": tokens,
                    "bond_dim": bond or "full",
                    "bond_dims": list(mpo.bond_dims),
                    "params_mpo": sum(p.numel() for p in mpo.parameters()),
                    "params_dense": sum(p.numel() for p in dense.parameters()),
                    "auto_picks": mpo.choose_mode(tokens),
                    "flops_dense_path": cost["dense"],
                    "flops_cores_path": cost["cores"],
                    **{f"t_{k}": v for k, v in t.items()},
                    "ratio_auto_vs_linear": t["mpo_auto"] / t["nn.Linear"],
                }
            )
            print(json.dumps(rows[-1]))
        # Token sweep at small bond: where the input contraction wins.
        for bond in (8, 32):
            mpo = MPOLinear(in_f, out_f, bond_dim=bond)
            for n_tok in sweep:
                xs = torch.randn(n_tok, in_f, requires_grad=True)
                fns = {"nn.Linear": step(dense, xs)}
                for mode in ("auto", "dense", "cores"):
                    m = MPOLinear(in_f, out_f, bond_dim=bond, forward_mode=mode)
                    m.load_state_dict(mpo.state_dict())
                    fns[f"mpo_{mode}"] = step(m, xs)
                t = round_robin(fns, repeats)
                rows.append(
                    {
                        "shape": f"{in_f}x{out_f}",
                        "tokens": n_tok,
                        "bond_dim": bond,
                        "auto_picks": mpo.choose_mode(n_tok),
                        **{f"t_{k}": v for k, v in t.items()},
                        "speedup_cores_vs_linear": t["nn.Linear"] / t["mpo_cores"],
                        "speedup_auto_vs_linear": t["nn.Linear"] / t["mpo_auto"],
                    }
                )
                print(json.dumps(rows[-1]))
    return rows


# ---------------------------------------------------------------------------- training step


def bench_train_step(repeats: int, batch: int, seq: int, layers: int, hidden: int) -> dict:
    from transformers import BertConfig, BertForMaskedLM

    heads, inter, vocab = hidden // 64, 4 * hidden, 30522
    torch.manual_seed(0)
    cfg = MPOBertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        sharing="central",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    ours = MPOBertForMaskedLM(cfg).train()
    hf = BertForMaskedLM(
        BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            attn_implementation="sdpa",
        )
    ).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = torch.full_like(ids, -100)
    pick = torch.rand(batch, seq, generator=g) < 0.15
    labels[pick] = ids[pick]
    mask = torch.ones_like(ids)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step_ours() -> None:
        loss = ours(ids, mask, labels=labels).loss
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_hf() -> None:
        loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt_hf.zero_grad(set_to_none=True)
        loss.backward()
        opt_hf.step()

    t = round_robin({"mpobert": step_ours, "hf_bert": step_hf}, repeats, warmup=2)
    out = {
        "layers": layers,
        "hidden": hidden,
        "batch": batch,
        "seq": seq,
        "t_mpobert": t["mpobert"],
        "t_hf_bert": t["hf_bert"],
        "ratio": t["mpobert"] / t["hf_bert"],
        "params_mpobert_unique": ours.num_parameters(),
        "params_hf": sum(p.numel() for p in hf.parameters()),
    }
    print(json.dumps(out))
    return out


# ---------------------------------------------------------------------------- parameters


def _hf_count(kind: str, **kw: Any) -> int:
    import transformers

    with torch.device("meta"):
        if kind == "bert":
            model = transformers.BertForMaskedLM(transformers.BertConfig(**kw))
        else:
            model = transformers.AlbertForMaskedLM(transformers.AlbertConfig(**kw))
    return sum(p.numel() for p in model.parameters())


def bench_parameters() -> dict:
    peers = {
        "BERT-base (12L, 768)": _hf_count("bert"),
        "BERT-large (24L, 1024)": _hf_count(
            "bert",
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
        ),
        "ALBERT-base (12L, 768, E=128)": _hf_count("albert", **_albert("base")),
        "ALBERT-large (24L, 1024, E=128)": _hf_count("albert", **_albert("large")),
    }
    rows = []
    for hidden in (768, 1024):
        for layers in (12, 24, 48):
            for sharing, adapter in (("central", 8), ("central", 0), ("none", 0)):
                cfg = MPOBertConfig(
                    hidden_size=hidden,
                    intermediate_size=4 * hidden,
                    num_attention_heads=hidden // 64,
                    num_hidden_layers=layers,
                    sharing=sharing,
                    adapter_size=adapter,
                )
                with torch.device("meta"):
                    model = MPOBertForMaskedLM(cfg)
                row = {
                    "hidden": hidden,
                    "layers": layers,
                    "sharing": sharing,
                    "adapter_size": adapter,
                    "unique": model.num_parameters(unique=True),
                    "without_sharing": model.num_parameters(unique=False),
                    **model.parameter_breakdown(),
                }
                rows.append(row)
                print(json.dumps(row))
    return {"peers": peers, "mpobert": rows}


def _albert(size: str) -> dict:
    if size == "base":
        return dict(
            embedding_size=128,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            vocab_size=30000,
        )
    return dict(
        embedding_size=128,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        vocab_size=30000,
    )


# ---------------------------------------------------------------------------- conversion


def bench_convert(target_layers: list[int]) -> list:
    """Time ``from_bert`` ("clone" and "fit") on a randomly initialised BERT-base."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig())
    rows = []
    for layers in target_layers:
        for init in ("clone", "fit"):
            t = time.perf_counter()
            model = MPOBertForMaskedLM.from_bert(hf, init=init, num_hidden_layers=layers)
            rep = model.conversion_report
            rows.append(
                {
                    "source_layers": 12,
                    "target_layers": layers,
                    "init": init,
                    "seconds": time.perf_counter() - t,
                    "mean_relative_error": rep.mean_relative_error,
                    "als_sweeps": {k: len(v) - 2 for k, v in rep.objectives.items()},
                }
            )
            print(json.dumps(rows[-1]))
    return rows


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--only", choices=("linear", "train", "params", "convert"), action="append")
    ap.add_argument("--quick", action="store_true", help="tiny repeats and sizes (smoke test)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(args.only or ("linear", "train", "params"))
    repeats = 2 if args.quick else args.repeats
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "repeats": repeats,
    }
    if "params" in only:
        result["parameters"] = bench_parameters()
    if "linear" in only:
        bonds = [None, 64, 16] if not args.quick else [None, 16]
        sweep = [1, 16, 128, 1024] if not args.quick else [1, 64]
        result["linear"] = bench_linear(repeats, 512 if args.quick else args.tokens, bonds, sweep)
    if "train" in only:
        layers = 2 if args.quick else 12
        result["train_step"] = bench_train_step(
            repeats, 2 if args.quick else args.batch, 32 if args.quick else args.seq, layers, 256
        )
    if "convert" in only and args.only:  # slow (minutes): only when asked for
        result["convert"] = bench_convert([12] if args.quick else [12, 48])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
