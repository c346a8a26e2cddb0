"""ONNX export of a neural model's sequence encoder, and the item matrix beside it.

``export_onnx(model, out)`` writes::

    out/encoder.onnx        (items int64 (B, max_len) left-aligned, 0 after the end; lengths int64 (B,);
                             types, timestamps int64 (B, max_len) aligned with items, only in the graph
                             when the model reads event features) -> user_vectors float32 (B, d)
    out/items.safetensors   item_matrix float32 (n_items + 1, d): scores = user_vectors @ item_matrix.T
    out/manifest.json       format version, model name, n_items, max_len, hidden

The exported graph reads a fixed window of ``max_len`` columns; the wrappers below restate each
model's ``user_vectors`` without Python-side shape logic (``len(items)``, ``int(x.max())``),
which tracing would freeze into constants. ``tests/test_onnx.py`` checks parity with eager PyTorch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from shopseq.atomic import replace_dir, temp_sibling
from shopseq.models.base import IncompatibleModelError, Recommender

ONNX_FORMAT = 1
ENCODER_FILE = "encoder.onnx"
ITEMS_FILE = "items.safetensors"
MANIFEST_FILE = "manifest.json"
INPUTS = ("items", "lengths", "types", "timestamps")


def _state_at(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, L, d), (B,) -> (B, d) by gather (traceable for any batch size)."""
    index = positions.view(-1, 1, 1).expand(-1, 1, h.shape[2])
    return h.gather(1, index).squeeze(1)


class LastStateEncoder(nn.Module):
    """SASRec / GRU4Rec: the hidden state at the last real event."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, types: torch.Tensor,
                timestamps: torch.Tensor) -> torch.Tensor:
        if getattr(self.module, "reads_event_features", False):
            h = self.module.hidden_states(items, lengths, types, timestamps)
        else:
            h = self.module.hidden_states(items)
        state = _state_at(h, (lengths - 1).clamp_min(0))
        to_output = getattr(self.module, "to_output", None)  # SASRec's cosine scoring normalises
        return state if to_output is None else to_output(state)


class MaskTokenEncoder(nn.Module):
    """BERT4Rec: the last ``window - 1`` events, then [MASK]; the state at [MASK]."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, types: torch.Tensor,
                timestamps: torch.Tensor) -> torch.Tensor:
        window = self.module.window
        keep = lengths.clamp(max=window - 1)
        cols = torch.arange(window, device=items.device)[None, :]
        src = (cols + (lengths - keep)[:, None]).clamp(max=items.shape[1] - 1)
        inp = torch.where(cols < keep[:, None], items.gather(1, src), torch.zeros_like(items))
        inp = torch.where(cols == keep[:, None], torch.full_like(items, self.module.mask_id), inp)
        return _state_at(self.module.hidden_states(inp), keep)


def export_wrapper(model: Recommender) -> nn.Module:
    module = getattr(model, "module", None)
    if module is None or not hasattr(module, "hidden_states"):
        raise ValueError(f"{model.name} is not a neural sequence model; only sasrec, bert4rec and gru4rec "
                         "export to ONNX (serve baselines with --backend torch)")
    if getattr(module, "scores_each_history", False):
        raise ValueError("a model with the next-item pointer or seen-item offsets scores each history's own "
                         "items, which the ONNX encoder + item matrix cannot; serve it with --backend torch")
    if hasattr(module, "mask_id") and getattr(module, "reads_event_features", False):
        raise ValueError("BERT4Rec with event-feature inputs does not export to ONNX yet")
    wrapper = MaskTokenEncoder(module) if hasattr(module, "mask_id") else LastStateEncoder(module)
    return wrapper.eval()


def export_onnx(model: Recommender, out: Path, opset: int = 17) -> Path:
    """Write encoder.onnx + items.safetensors + manifest.json under ``out`` (atomically)."""
    wrapper = export_wrapper(model)
    max_len = model.max_len
    # an example with a full row and a short row: no path through the graph is specialised away
    items_np, lengths_np, types_np, stamps_np = random_histories(model.n_items, max_len, 2, seed=0)
    for a in (items_np, types_np, stamps_np):
        a[1, 1:] = 0
    lengths_np[1] = 1
    example = tuple(torch.from_numpy(a) for a in (items_np, lengths_np, types_np, stamps_np))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    tmp.mkdir()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape constants we rely on deliberately
        torch.onnx.export(
            wrapper, example, str(tmp / ENCODER_FILE), input_names=list(INPUTS),
            output_names=["user_vectors"], opset_version=opset, dynamo=False,
            dynamic_axes={**{name: {0: "batch"} for name in INPUTS}, "user_vectors": {0: "batch"}},
        )
        matrix = model.module.output_weight().detach().float().numpy()  # type: ignore[attr-defined]
    save_file({"item_matrix": np.ascontiguousarray(matrix)}, str(tmp / ITEMS_FILE))
    manifest = {"format_version": ONNX_FORMAT, "model": model.name, "n_items": model.n_items,
                "max_len": max_len, "hidden": int(matrix.shape[1]), "opset": opset}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return replace_dir(tmp, out)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {directory}: not an ONNX export of `shopseq export-model`")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != ONNX_FORMAT:
        raise IncompatibleModelError(
            f"{directory} is ONNX export format {manifest.get('format_version')!r}; this shopseq reads "
            f"{ONNX_FORMAT}. Export it again with `shopseq export-model`."
        )
    return manifest


class OnnxEncoder:
    """The exported encoder on onnxruntime (one intra-op thread unless told otherwise)."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        import onnxruntime as ort  # optional dependency: only the ONNX backend needs it

        directory = Path(directory)
        self.manifest = read_manifest(directory)
        self.max_len = int(self.manifest["max_len"])
        self.n_items = int(self.manifest["n_items"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(directory / ENCODER_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.item_matrix = load_file(str(directory / ITEMS_FILE))["item_matrix"]
        # the exporter drops inputs the graph never reads (types / timestamps of item-only models)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def _window(self, values: np.ndarray | None, batch: int) -> np.ndarray:
        """(B, max_len) int64: padded with zeros (or cut) to the exported width."""
        if values is None:
            return np.zeros((batch, self.max_len), dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)[:, : self.max_len]
        pad = self.max_len - values.shape[1]
        return np.ascontiguousarray(np.pad(values, ((0, 0), (0, pad))) if pad else values)

    def user_vectors(self, items: np.ndarray, lengths: np.ndarray, types: np.ndarray | None = None,
                     timestamps: np.ndarray | None = None) -> np.ndarray:
        """Left-aligned (B, <= max_len) histories; the event features only matter to models that read them."""
        b = len(items)
        feed = {"items": self._window(items, b), "lengths": np.ascontiguousarray(lengths, dtype=np.int64),
                "types": self._window(types, b), "timestamps": self._window(timestamps, b)}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


def random_histories(n_items: int, max_len: int, batch: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random left-aligned histories (B, max_len): items, lengths 1..max_len, event types and
    increasing ms timestamps (gaps of seconds to days), zeros after each row's end."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=batch)
    lengths[0] = max_len
    items = rng.integers(1, n_items + 1, size=(batch, max_len))
    types = rng.integers(0, 5, size=(batch, max_len))
    gaps = np.exp(rng.uniform(0, np.log(3 * 86_400_000), size=(batch, max_len))).astype(np.int64)
    timestamps = 1_700_000_000_000 + np.cumsum(gaps, axis=1)
    pad = np.arange(max_len)[None, :] >= lengths[:, None]
    for a in (items, types, timestamps):
        a[pad] = 0
    return items.astype(np.int64), lengths.astype(np.int64), types.astype(np.int64), timestamps.astype(np.int64)


def right_aligned(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Left-aligned rows -> right-aligned (the ``Histories`` layout)."""
    width = values.shape[1]
    shift = np.arange(width)[None, :] - (width - lengths)[:, None]
    return np.where(shift >= 0, np.take_along_axis(values, np.clip(shift, 0, None), axis=1), 0)


def parity(model: Recommender, directory: Path, batch: int = 64, seed: int = 0) -> float:
    """Max |score difference| between the ONNX encoder (+ item matrix) and ``model.score``."""
    from shopseq.models.base import Histories

    encoder = OnnxEncoder(directory)
    items, lengths, types, stamps = random_histories(model.n_items, model.max_len, batch, seed)
    histories = Histories(*(right_aligned(a, lengths) for a in (items, types, stamps)), lengths)
    expected = model.score(histories).numpy()
    got = encoder.user_vectors(items, lengths, types, stamps) @ encoder.item_matrix.T
    return float(np.abs(got - expected).max())
