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
    kinds = ["mpobert", "dense"] + (["hf-bert"] if args.hf else [])
    rows = []
    for layers in args.layers:
        for kind in kinds:
            torch.manual_seed(0)
            model = _model(kind, layers, args, tok.vocab_size)
            t0 = time.perf_counter()
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
                    output_dir=str(workdir / f"{kind}-{layers}"),
                ),
            )
            wall = time.perf_counter() - t0
            recs = [
                json.loads(ln)
                for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines()
                if json.loads(ln)["split"] == "train"
            ][args.warmup :]
            data_s = sum(r["data_time_s"] for r in recs)
            compute_s = sum(r["compute_time_s"] for r in recs)
            row = {
                "model": f"{kind}-{layers}",
                "layers": layers,
                "unique_params": _unique_params(model),
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
                "data_time_s": data_s,
                "compute_time_s": compute_s,
                "data_share": data_s / (data_s + compute_s),
                "final_loss": recs[-1]["loss"],
                "wall_s": wall,
            }
            rows.append(row)
            print(
                f"{row['model']:>12}: {row['unique_params']:>11,} params  "
                f"{row['tokens_per_s']:>8.0f} tok/s  data {100 * row['data_share']:.1f}% of step",
                flush=True,
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
    p.add_argument("--warmup", type=int, default=2, help="unmeasured first steps")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--hf", action="store_true", help="add Hugging Face BertForMaskedLM")
    p.add_argument("--json", help="write the rows and settings to this JSON file")
    args = p.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = run(args)
    base = {r["layers"]: r for r in rows if r["model"].startswith("dense")}
    print("\n| model | unique params | tokens/s | vs dense | data time share |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["tokens_per_s"] / base[r["layers"]]["tokens_per_s"]
        print(
            f"| {r['model']} | {r['unique_params']:,} | {r['tokens_per_s']:.0f} | {ratio:.2f} "
            f"| {100 * r['data_share']:.1f}% |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
