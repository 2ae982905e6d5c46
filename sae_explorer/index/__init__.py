"""The activation index: what one pass of a corpus through CLIP and an SAE leaves on disk.

An index folder holds, besides ``manifest.json`` (schema, counts, hashes, timings, and each
file's size, SHA-256 and modification time, see :mod:`.files`):

- ``items.parquet``: one row per indexed item (id, modality, source, label, ground truth);
- ``embeddings.npy``: raw CLIP embeddings, fp16 ``[n_items, d]``, for neighbour search;
- ``codes_indptr.npy`` / ``codes_ids.npy`` / ``codes_values.npy``: each item's non-zero latents,
  capped at its top-K by value, in CSR form (int64 indptr, int32 ids, fp16 values);
- ``latent_*.npy``: per-latent statistics of the *full* activations, gathered while streaming:
  frequency, mean and max, image/text counts, Matryoshka level, the top-M items, a uniform
  random sample of active items (for quantile views) and a histogram of non-zero values;
- ``input_stats.npz``, only when a modality was encoded with statistics of its own instead of
  the checkpoint's (an SAE trained on one modality, see :mod:`sae_explorer.modality_stats`).

Nothing ``[n_items, n_latents]``-sized exists at any point: :class:`LatentAccumulator` merges
each batch into fixed-size per-latent state. Arrays are opened memory-mapped, so loading an index
costs milliseconds whatever its size; every file is written to a temporary name and renamed.

This package exports the format and the reader. The build (:mod:`.build`, :mod:`.embed`,
:mod:`.checkpoint`, :mod:`.items`), its cache folders and lock (:mod:`.cache`) and latent names
(:mod:`.names`) are imported from their modules; :mod:`sae_explorer.precompute` ties them
together.
"""

from sae_explorer.index.accumulator import NO_KEY, LatentAccumulator, item_keys, median_levels
from sae_explorer.index.appender import NpyAppender
from sae_explorer.index.files import (
    CODES_NAMES,
    EMBEDDINGS_NAME,
    INPUT_STATS_NAME,
    ITEMS_NAME,
    LATENT_ARRAYS,
    MANIFEST_NAME,
    OPTIONAL_NAMES,
    SCHEMA,
    CorruptIndexError,
    IndexCounts,
    file_records,
    index_file_names,
    index_files,
    read_manifest,
    verify_files,
    write_latent_arrays,
)
from sae_explorer.index.reader import ActivationIndex, Histogram, ItemCodes, LatentSummary
from sae_explorer.index.sparse import (
    HIST_CODE_LO,
    HIST_N_BINS,
    HIST_SHIFT,
    ActiveEntries,
    SparseCodes,
    active_entries,
    hist_bin_edges,
    top_codes,
)

__all__ = [
    "CODES_NAMES",
    "EMBEDDINGS_NAME",
    "HIST_CODE_LO",
    "HIST_N_BINS",
    "HIST_SHIFT",
    "INPUT_STATS_NAME",
    "ITEMS_NAME",
    "LATENT_ARRAYS",
    "MANIFEST_NAME",
    "NO_KEY",
    "OPTIONAL_NAMES",
    "SCHEMA",
    "ActivationIndex",
    "ActiveEntries",
    "CorruptIndexError",
    "Histogram",
    "IndexCounts",
    "ItemCodes",
    "LatentAccumulator",
    "LatentSummary",
    "NpyAppender",
    "SparseCodes",
    "active_entries",
    "file_records",
    "hist_bin_edges",
    "index_file_names",
    "index_files",
    "item_keys",
    "median_levels",
    "read_manifest",
    "top_codes",
    "verify_files",
    "write_latent_arrays",
]
