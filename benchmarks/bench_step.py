"""MPOBERT against the dense BERT of the same shape: every ratio of issue 11 in one run.

BERT-base widths (hidden 768, intermediate 3072, 12 heads), 12 layers, full rank, central
sharing, masked-LM head, against ``sharing="none", mpo_matrices=()`` (a dense BERT). In one
process, for one micro-batch shape (``--batch`` x ``--seq``), the contestants alternate in
every repeat (round-robin) and medians are reported:

* ``inference``: ``eval()`` under ``no_grad`` (MPOBERT reuses its rebuilt weights);
* ``train``: one optimizer step (forward, backward, AdamW) on one micro-batch;
* ``train-accum``: one optimizer step over ``--accum`` micro-batches, MPOBERT with one
  rebuild per step (``encoder.step_weights()``, the trainer's way) and, for comparison, with
  a rebuild per micro-batch (the way before);
* the rebuild alone (forward and backward of every MPO matrix of the model), its FLOPs and
  GFLOP/s, beside the GFLOP/s of this machine's GEMM at the layer's shape;
* ``--compile``: the same training step under ``torch.compile`` (inductor) against eager,
  for both models (compile time reported separately).

    .venv/bin/python benchmarks/bench_step.py --repeats 5 --threads 2 \\
        --out docs/benchmarks/step.json
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import machine_info, round_robin, write_json

from tnlm_models import MPOBertConfig, MPOBertForMaskedLM
from tnlm_models.mpo_linear import MPOLinear


def build(dense: bool, args: argparse.Namespace) -> MPOBertForMaskedLM:
    kw: dict[str, Any] = dict(
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_attention_heads=args.hidden // 64,
        num_hidden_layers=args.layers,
        vocab_size=30522,
        max_position_embeddings=max(512, args.seq),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if dense:
        kw.update(sharing="none", mpo_matrices=())
    torch.manual_seed(0)
    return MPOBertForMaskedLM(MPOBertConfig(**kw))


def batches(args: argparse.Namespace, n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, 2000, (args.batch, args.seq), generator=g)
        labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, -100)
        out.append({"input_ids": ids, "labels": labels})
    return out


def train_step(
    model: MPOBertForMaskedLM,
    micro: list[dict[str, torch.Tensor]],
    once: bool,
    forward: Callable[..., Any] | None = None,
) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    fwd = model if forward is None else forward
    model.train()

    def run() -> None:
        ctx = model.bert.encoder.step_weights() if once else contextlib.nullcontext()
        with ctx, model.trusted_inputs():
            for b in micro:
                (fwd(**b).loss / len(micro)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def rebuild_numbers(model: MPOBertForMaskedLM, args: argparse.Namespace) -> dict[str, float]:
    """Seconds and FLOPs of rebuilding every MPO weight (forward, and forward + backward),
    and the GEMM speed at the FFN shape."""
    enc = model.bert.encoder
    rows = args.batch * args.seq
    mpo_layers = [m for m in enc.modules() if isinstance(m, MPOLinear)]
    flops = sum(m.rebuild_flops() for m in mpo_layers)  # forward; backward is 2x
    model.train()

    def fwd() -> None:
        with torch.no_grad(), torch.enable_grad():
            enc.rebuild_weights(rows)

    def fwd_bwd() -> None:
        ws = enc.rebuild_weights(rows)
        torch.autograd.backward(list(ws.values()), [torch.ones_like(w) for w in ws.values()])
        model.zero_grad(set_to_none=True)

    h = args.hidden
    a, b = torch.randn(rows, h), torch.randn(h, 4 * h)
    t = round_robin(
        {"rebuild_fwd": fwd, "rebuild_fwd_bwd": fwd_bwd, "gemm": lambda: a @ b}, args.repeats
    )
    gemm_flops = 2 * rows * h * 4 * h
    return {
        "rebuild_flops_fwd": flops,
        "rebuild_fwd_s": t["rebuild_fwd"],
        "rebuild_fwd_bwd_s": t["rebuild_fwd_bwd"],
        "rebuild_gflops_per_s": flops / t["rebuild_fwd"] / 1e9,
        "rebuild_fwd_bwd_gflops_per_s": 3 * flops / t["rebuild_fwd_bwd"] / 1e9,
        "gemm_gflops_per_s": gemm_flops / t["gemm"] / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mpo, dense = build(False, args), build(True, args)
    one, many = batches(args, 1), batches(args, args.accum)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "threads": args.threads,
        "repeats": args.repeats,
        "shape": {k: getattr(args, k) for k in ("layers", "hidden", "batch", "seq", "accum")},
    }

    ids = one[0]["input_ids"]
    mpo.eval(), dense.eval()
    with torch.no_grad():
        t = round_robin(
            {"mpobert": lambda: mpo(ids), "dense": lambda: dense(ids)}, args.repeats, warmup=1
        )
    report["inference"] = {**t, "ratio": t["mpobert"] / t["dense"]}
    print(
        f"inference: {t['mpobert']:.3f} s vs {t['dense']:.3f} s -> {t['mpobert'] / t['dense']:.3f}x"
    )

    t = round_robin(
        {"mpobert": train_step(mpo, one, True), "dense": train_step(dense, one, False)},
        args.repeats,
        warmup=1,
    )
    report["train"] = {**t, "ratio": t["mpobert"] / t["dense"]}
    print(
        f"train step: {t['mpobert']:.3f} s vs {t['dense']:.3f} s -> {report['train']['ratio']:.3f}x"
    )

    t = round_robin(
        {
            "mpobert": train_step(mpo, many, True),
            "mpobert_rebuild_per_micro_batch": train_step(mpo, many, False),
            "dense": train_step(dense, many, False),
        },
        args.repeats,
        warmup=1,
    )
    report["train_accum"] = {
        **t,
        "ratio": t["mpobert"] / t["dense"],
        "ratio_rebuild_per_micro_batch": t["mpobert_rebuild_per_micro_batch"] / t["dense"],
    }
    print(
        f"train step, {args.accum} micro-batches: {t['mpobert']:.3f} s (per micro-batch rebuild "
        f"{t['mpobert_rebuild_per_micro_batch']:.3f} s) vs {t['dense']:.3f} s -> "
        f"{report['train_accum']['ratio']:.3f}x "
        f"({report['train_accum']['ratio_rebuild_per_micro_batch']:.3f}x)"
    )

    r = rebuild_numbers(mpo, args)
    report["rebuild"] = r
    print(
        f"rebuild: {r['rebuild_flops_fwd'] / 1e9:.1f} GFLOP forward, {r['rebuild_fwd_s']:.3f} s "
        f"({r['rebuild_gflops_per_s']:.1f} GFLOP/s), forward+backward "
        f"{r['rebuild_fwd_bwd_s']:.3f} s ({r['rebuild_fwd_bwd_gflops_per_s']:.1f} GFLOP/s); "
        f"GEMM {r['gemm_gflops_per_s']:.1f} GFLOP/s"
    )

    if args.compile:
        comp: dict[str, Any] = {}
        for name, model in (("mpobert", mpo), ("dense", dense)):
            fwd = torch.compile(model)
            t0 = time.perf_counter()
            train_step(model, one, name == "mpobert", fwd)()
            comp[f"{name}_compile_s"] = time.perf_counter() - t0
        t = round_robin(
            {
                "mpobert_eager": train_step(mpo, one, True),
                "mpobert_compiled": train_step(mpo, one, True, torch.compile(mpo)),
                "dense_eager": train_step(dense, one, False),
                "dense_compiled": train_step(dense, one, False, torch.compile(dense)),
            },
            args.repeats,
            warmup=1,
        )
        comp.update(t)
        comp["mpobert_speedup"] = t["mpobert_eager"] / t["mpobert_compiled"]
        comp["dense_speedup"] = t["dense_eager"] / t["dense_compiled"]
        report["compile"] = comp
        print(
            f"compiled train step: MPOBERT {t['mpobert_compiled']:.3f} s (eager "
            f"{t['mpobert_eager']:.3f} s), dense {t['dense_compiled']:.3f} s (eager "
            f"{t['dense_eager']:.3f} s); compile {comp['mpobert_compile_s']:.0f} s / "
            f"{comp['dense_compile_s']:.0f} s"
        )
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
