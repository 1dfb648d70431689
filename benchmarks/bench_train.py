"""Training throughput of MPOBERT vs dense BERT of the same shape, through ``tnlm_models.train``.

Every model is trained for a few optimizer steps by the real trainer (masked-LM batches,
AdamW, clipping, logging) in one process, one after the other, so the numbers are comparable
within a run. Reported per model: unique parameters, tokens/s (median over the measured
steps, warm-up steps dropped), and the share of step time spent waiting for data (batch
assembly and masking) versus computing (forward, backward, update).

Models (``--layers 12 48``):

* ``mpobert-L``: MPOBERT, central tensors shared across layers (``sharing="central"``);
* ``dense-L``: the same code path with every matrix dense and nothing shared
  (``sharing="none"``, ``mpo_matrices=()``): a BERT of the same shape;
* ``hf-bert-L`` (``--hf``): Hugging Face ``BertForMaskedLM`` of the same shape, the peer.

Usage::

    python benchmarks/bench_train.py                      # data: ../shared/data WikiText-2
    python benchmarks/bench_train.py --layers 12 --steps 4 --data my.txt --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "wikitext-2" / "valid.txt"


def _model(kind: str, layers: int, args: argparse.Namespace, vocab: int) -> torch.nn.Module:
    shape = {
        "vocab_size": vocab,
        "hidden_size": args.hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate,
        "max_position_embeddings": args.seq,
        "pad_token_id": 0,
    }
    if kind == "hf-bert":
        from transformers import BertConfig, BertForMaskedLM

        return BertForMaskedLM(BertConfig(**shape))
    from tnlm_models import MPOBertConfig, MPOBertForMaskedLM

    extra = {"num_cores": args.cores}
    if kind == "dense":
        extra.update(sharing="none", mpo_matrices=())
    return MPOBertForMaskedLM(MPOBertConfig.from_dict({**shape, **extra}))


def _pipeline_throughput(docs: list[str], tok, args: argparse.Namespace) -> dict[str, float]:
    """Tokens/s of the data pipeline alone: encoding + packing, and MLM batch assembly."""
    from tnlm_models.data import KeyedDataset, MLMCollator, StepBatcher, build_mlm_dataset

    t0 = time.perf_counter()
    ds = build_mlm_dataset(docs, tok, args.seq, "blocks")
    t_encode = time.perf_counter() - t0
    keyed, collate = KeyedDataset(ds), MLMCollator(tok, seed=0)
    batcher = StepBatcher(len(ds), args.batch, seed=0)
    n_tokens, t0 = 0, time.perf_counter()
    for step in range(min(200, batcher.steps_per_epoch)):
        epoch, idx = batcher.batch(step)
        batch = collate([keyed[(epoch, int(i))] for i in idx])
        n_tokens += int(batch["attention_mask"].sum())
    t_collate = time.perf_counter() - t0
    return {
        "encode_tokens_per_s": ds.num_tokens() / t_encode,
        "collate_tokens_per_s": n_tokens / t_collate,
    }


def _unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def run(args: argparse.Namespace) -> list[dict]:
    from tnlm_models.data import read_text
    from tnlm_models.tokenization import WordPieceTokenizer
    from tnlm_models.train import train

    data = Path(args.data) if args.data else DEFAULT_DATA
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if data.exists():
        docs = read_text(data)
        data_arg: str | None = str(data)
    else:
        from tnlm_models.data import default_corpus

        print(f"{data} not found: using the built-in corpus", file=sys.stderr)
        docs, data_arg = default_corpus(), None
    tok = WordPieceTokenizer.train(docs, vocab_size=args.vocab)
    tok.save(workdir / "tok")
    pipeline = _pipeline_throughput(docs, tok, args)
    print(
        f"data pipeline alone: tokenize+pack {pipeline['encode_tokens_per_s']:,.0f} tok/s, "
        f"mask+pad+collate {pipeline['collate_tokens_per_s']:,.0f} tok/s",
        flush=True,
    )
    kinds = ["mpobert", "dense"] + (["hf-bert"] if args.hf else [])
    variants = [(kind, layers) for layers in args.layers for kind in kinds]
    steps: dict[str, list[dict]] = {f"{k}-{n}": [] for k, n in variants}
    params: dict[str, int] = {}
    # round-robin repeats spread any outside load evenly over the models
    for rep in range(args.repeats):
        for kind, layers in variants:
            name = f"{kind}-{layers}"
            torch.manual_seed(0)
            model = _model(kind, layers, args, tok.vocab_size)
            params[name] = _unique_params(model)
            res = train(
                model,
                data_arg,
                dict(
                    tokenizer=str(workdir / "tok"),
                    max_seq_length=args.seq,
                    batch_size=args.batch,
                    max_steps=args.warmup + args.steps,
                    valid_fraction=0.0,
                    log_every=1,
                    progress=False,
                    num_workers=args.workers,
                    output_dir=str(workdir / f"{name}-{rep}"),
                ),
            )
            recs = [
                json.loads(ln)
                for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines()
                if json.loads(ln)["split"] == "train"
            ][args.warmup :]
            steps[name].extend(recs)
            print(
                f"  repeat {rep}: {name:>12}: "
                f"{statistics.median(r['tokens_per_s'] for r in recs):8.0f} tok/s",
                flush=True,
            )
    rows: list[dict] = [{"model": "data pipeline alone", **pipeline}]
    for name, recs in steps.items():
        tps = sorted(r["tokens_per_s"] for r in recs)
        data_s = sum(r["data_time_s"] for r in recs)
        compute_s = sum(r["compute_time_s"] for r in recs)
        rows.append(
            {
                "model": name,
                "layers": int(name.rsplit("-", 1)[1]),
                "unique_params": params[name],
                "tokens_per_s": statistics.median(tps),
                "tokens_per_s_best": tps[-1],
                "tokens_per_cpu_s": sum(r["tokens"] for r in recs)
                / sum(r["cpu_time_s"] for r in recs),
                "measured_steps": len(tps),
                "data_time_s": data_s,
                "compute_time_s": compute_s,
                "data_share": data_s / (data_s + compute_s),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help=f"text file (default {DEFAULT_DATA})")
    p.add_argument("--layers", type=int, nargs="+", default=[12, 48])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--cores", type=int, default=3)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="measured steps")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured first steps per run")
    p.add_argument("--repeats", type=int, default=2, help="round-robin repeats")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--hf", action="store_true", help="add Hugging Face BertForMaskedLM")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: CPU time is then robust to other load on the machine)",
    )
    p.add_argument("--json", help="write the rows and settings to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = run(args)
    models = [r for r in rows if "layers" in r]
    base = {r["layers"]: r for r in models if r["model"].startswith("dense")}
    print(
        "\n| model | unique params | tokens per CPU-second | vs dense | wall tokens/s "
        "(median, best step) | data time share |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in models:
        ratio = r["tokens_per_cpu_s"] / base[r["layers"]]["tokens_per_cpu_s"]
        print(
            f"| {r['model']} | {r['unique_params']:,} | {r['tokens_per_cpu_s']:.0f} "
            f"| {ratio:.2f} | {r['tokens_per_s']:.0f}, {r['tokens_per_s_best']:.0f} "
            f"| {100 * r['data_share']:.2f}% |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
