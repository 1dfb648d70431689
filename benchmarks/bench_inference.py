"""MPOBERT inference against the dense BERT of the same shape (issue 11).

BERT-base widths (hidden 768, intermediate 3072, 12 heads), 12 layers, full rank, central
sharing, against ``sharing="none", mpo_matrices=()`` (a dense BERT). Both run ``eval()``
under ``torch.no_grad()``; MPOBERT reuses its rebuilt weights while the parameters do not
change (``MPOBertEncoder.rebuild_weights``). The two models alternate inside every repeat
(round-robin) and the medians are reported, with the first-call time (which pays the
rebuild) separately.

    .venv/bin/python benchmarks/bench_inference.py --repeats 15 --threads 2 \\
        --out docs/benchmarks/inference.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine_info, write_json

from tnlm_models import MPOBertConfig, MPOBertModel

SHAPES = ((1, 32), (8, 128))


def build(dense: bool, layers: int) -> MPOBertModel:
    kw = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=layers,
        vocab_size=30522,
    )
    if dense:
        kw.update(sharing="none", mpo_matrices=())
    torch.manual_seed(0)
    return MPOBertModel(MPOBertConfig(**kw), add_pooling_layer=False).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"mpobert": build(False, args.layers), "dense": build(True, args.layers)}
    results = []
    for b, t in SHAPES:
        ids = torch.randint(1000, 2000, (b, t), generator=torch.Generator().manual_seed(1))
        times: dict[str, list[float]] = {k: [] for k in models}
        first: dict[str, float] = {}
        with torch.no_grad():
            for name, m in models.items():
                if name == "mpobert":
                    m.encoder.clear_weight_cache()
                t0 = time.perf_counter()
                m(ids)
                first[name] = time.perf_counter() - t0
            for _ in range(args.repeats):
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(ids)
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "batch": b,
            "tokens": t,
            "median_s": med,
            "first_call_s": first,
            "ratio": med["mpobert"] / med["dense"],
        }
        results.append(row)
        print(
            f"{b} x {t}: MPOBERT {med['mpobert'] * 1e3:.1f} ms, dense {med['dense'] * 1e3:.1f} ms"
            f" -> {row['ratio']:.3f}x (first call: MPOBERT {first['mpobert'] * 1e3:.0f} ms,"
            f" dense {first['dense'] * 1e3:.0f} ms)"
        )
    if args.out:
        write_json(
            args.out,
            {
                "machine": machine_info(),
                "threads": args.threads,
                "repeats": args.repeats,
                "layers": args.layers,
                "results": results,
            },
        )


if __name__ == "__main__":
    main()
