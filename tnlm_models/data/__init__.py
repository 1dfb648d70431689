"""Data pipeline: text corpora, GLUE-style TSV files, masked-LM and classification batches.

Everything random here is a pure function of a seed and a position, so that a run resumed
from a checkpoint sees exactly the batches and masks the uninterrupted run saw, and so that
one process and ``N`` data-parallel processes see the same global batches:

* the order of examples in epoch ``e`` is ``default_rng([seed, e]).permutation(n)``
  (:class:`StepBatcher`), and the batch of optimizer step ``s`` is a slice of it;
* the mask of example ``i`` in epoch ``e`` is drawn from ``default_rng([seed, e, i])``
  (:class:`MLMCollator`), whichever process or worker builds the batch.

Text layouts
------------
``"lines"``
    every non-empty line is one example, truncated to the sequence length;
``"blocks"``
    the token stream of all lines is packed into blocks of ``max_seq_length - 2`` tokens,
    each wrapped as ``[CLS] block [SEP]``.
"""

from .batches import (
    EVAL_EPOCH,
    ClassificationCollator,
    KeyedDataset,
    MLMCollator,
    StepBatcher,
    TokenDataset,
    eval_batches,
    train_batches,
)
from .glue import (
    GLUE_LAYOUTS,
    LABEL_HEADER_WORDS,
    ClassificationDataset,
    GlueExamples,
    GlueLayout,
    GlueTestExamples,
    check_class_labels,
    check_label_list,
    detect_glue_layout,
    encode_classification,
    infer_label_list,
    normalize_label,
    read_glue_test_tsv,
    read_glue_tsv,
)
from .text import (
    BINARY_SIGNATURES,
    SNIFF_BYTES,
    TEXT_FORMATS,
    binary_reason,
    build_mlm_dataset,
    check_encoding,
    decode_text,
    default_corpus,
    read_text,
    read_text_file,
    split_documents,
    split_lines,
)

__all__ = [
    "BINARY_SIGNATURES",
    "EVAL_EPOCH",
    "GLUE_LAYOUTS",
    "TEXT_FORMATS",
    "ClassificationCollator",
    "ClassificationDataset",
    "GlueExamples",
    "GlueLayout",
    "GlueTestExamples",
    "LABEL_HEADER_WORDS",
    "KeyedDataset",
    "MLMCollator",
    "StepBatcher",
    "TokenDataset",
    "binary_reason",
    "build_mlm_dataset",
    "check_class_labels",
    "check_encoding",
    "check_label_list",
    "decode_text",
    "default_corpus",
    "detect_glue_layout",
    "encode_classification",
    "eval_batches",
    "infer_label_list",
    "normalize_label",
    "read_glue_test_tsv",
    "read_glue_tsv",
    "read_text",
    "read_text_file",
    "split_documents",
    "train_batches",
    "SNIFF_BYTES",
    "split_lines",
]
