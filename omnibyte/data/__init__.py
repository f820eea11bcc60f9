"""Data: files -> documents -> uint16 shards on disk -> packed, resumable, rank-sharded batches."""

from omnibyte.data.corpus import DEFAULT_DATA_DIR, kjv_documents, prepare_kjv
from omnibyte.data.loader import BatchLoader, ShardDataset, eval_batches, is_dataset, read_meta
from omnibyte.data.prepare import (
    document_from_record,
    documents_from_path,
    expand_sources,
    prepare,
    write_dataset,
    write_splits,
)

__all__ = [
    "DEFAULT_DATA_DIR", "BatchLoader", "ShardDataset", "document_from_record", "documents_from_path",
    "eval_batches", "expand_sources", "is_dataset", "kjv_documents", "prepare", "prepare_kjv", "read_meta",
    "write_dataset", "write_splits",
]
