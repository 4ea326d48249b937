"""ComfyUI prompt semantics for SDXL's two text encoders (sticker-and-character.md §4.5 item 5).

* ``(text:w)`` sets a segment's weight, ``(text)`` multiplies it by 1.1 per level, ``\\(`` and
  ``\\)`` are literal; an unmatched ``)`` leaves every later parenthesis literal (ComfyUI's
  parser, shared/parity/sdxl_conditioning/README.md §3.6).
* A weighted token's embedding is interpolated from the empty prompt's embedding at the same
  position: ``z = (z − z_empty)·w + z_empty``.
* Prompts longer than 75 tokens are split into 77-token chunks (start + 75 + end/pad) encoded
  separately and concatenated; a word of fewer than 8 tokens is not split across chunks.
* Both encoders use the penultimate hidden states; the pooled vector is the second encoder's,
  from the first chunk. A shorter cond is tiled to the other's length, which leaves attention
  unchanged (ComfyUI's ``CONDCrossAttn.concat``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NESTED_WEIGHT = 1.1
CHUNK_LENGTH = 77
# ComfyUI keeps a word of fewer tokens than this in one chunk.
MAX_WORD_LENGTH = 8
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))


def escape_parentheses(text: str) -> str:
    for literal, code in _ESCAPES:
        text = text.replace(literal, code)
    return text


def unescape_parentheses(text: str) -> str:
    for literal, code in _ESCAPES:
        text = text.replace(code, literal[1])
    return text


def top_level_groups(text: str) -> list[str]:
    """Split at depth-0 parentheses: plain runs and whole ``( … )`` groups, in order."""
    pieces, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def weighted_segments(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """(segment, weight) pairs of an escaped prompt, in order."""
    out = []
    for piece in top_level_groups(text):
        if len(piece) < 2 or piece[0] != "(" or piece[-1] != ")":
            out.append((piece, weight))
            continue
        inner, inner_weight = piece[1:-1], weight * NESTED_WEIGHT
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1:])
                inner = inner[:colon]
            except ValueError:
                pass
        out.extend(weighted_segments(inner, inner_weight))
    return out


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """The prompt's (text, weight) segments with escapes resolved."""
    return [(unescape_parentheses(s), w) for s, w in weighted_segments(escape_parentheses(text))]


def weighted_words(tokenizer, text: str) -> list[list[tuple[int, float]]]:
    """Per word, its (token id, weight) pairs without start/end tokens."""
    words = []
    for segment, weight in parse_prompt(text):
        for word in segment.replace("\n", " ").split(" "):
            if word:
                ids = tokenizer(word)["input_ids"][1:-1]
                words.append([(t, weight) for t in ids])
    return words


def chunk_tokens(words: list[list[tuple[int, float]]], start: int, end: int, pad: int) -> list[list[tuple[int, float]]]:
    """77-token chunks (start … end, padded); a short word that does not fit opens a new chunk."""
    chunks = [[(start, 1.0)]]
    for word in words:
        is_long = len(word) >= MAX_WORD_LENGTH
        while word:
            chunk = chunks[-1]
            room = CHUNK_LENGTH - 1 - len(chunk)
            if len(word) <= room:
                chunk.extend(word)
                break
            if is_long:
                chunk.extend(word[:room])
                word = word[room:]
            chunk.append((end, 1.0))
            chunk.extend([(pad, 1.0)] * (CHUNK_LENGTH - len(chunk)))
            chunks.append([(start, 1.0)])
    last = chunks[-1]
    last.append((end, 1.0))
    last.extend([(pad, 1.0)] * (CHUNK_LENGTH - len(last)))
    return chunks


@dataclass
class PromptEmbeds:
    """SDXL conditioning of one prompt: (1, 77·k, 2048) hidden states and (1, 1280) pooled."""

    hidden: torch.Tensor
    pooled: torch.Tensor


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_with_one_encoder(tokenizer, encoder, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1, 77·k, C) weighted penultimate states and the first chunk's projected pooled output
    (None for an encoder without projection)."""
    start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, _pad_id(tokenizer)
    chunks = chunk_tokens(weighted_words(tokenizer, text), start, end, pad)
    weights = torch.tensor([[w for _, w in c] for c in chunks], dtype=torch.float64)
    has_weights = bool((weights != 1.0).any())
    ids = [[t for t, _ in c] for c in chunks]
    if has_weights:
        ids.append([start, end] + [pad] * (CHUNK_LENGTH - 2))
    device = encoder.device
    out = encoder(torch.tensor(ids, device=device), output_hidden_states=True)
    hidden = out.hidden_states[-2]
    pooled = out.text_embeds[:1] if hasattr(out, "text_embeds") else None
    if has_weights:
        empty, hidden = hidden[-1:], hidden[:-1]
        w = weights.to(device=device, dtype=hidden.dtype)[..., None]
        hidden = torch.where(w != 1.0, (hidden - empty) * w + empty, hidden)
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled


class ComfyPromptEncoder:
    """Both SDXL text encoders with ComfyUI's weighting and chunking."""

    def __init__(self, tokenizer, text_encoder, tokenizer_2, text_encoder_2):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.tokenizer_2 = tokenizer_2
        self.text_encoder_2 = text_encoder_2

    @torch.no_grad()
    def encode(self, text: str) -> PromptEmbeds:
        hidden_l, _ = encode_with_one_encoder(self.tokenizer, self.text_encoder, text)
        hidden_g, pooled = encode_with_one_encoder(self.tokenizer_2, self.text_encoder_2, text)
        length = min(hidden_l.shape[1], hidden_g.shape[1])
        return PromptEmbeds(torch.cat([hidden_l[:, :length], hidden_g[:, :length].to(hidden_l.dtype)], -1), pooled)

    def encode_pair(self, positive: str, negative: str) -> tuple[PromptEmbeds, PromptEmbeds]:
        """Positive and negative, tiled to a common length so they batch for CFG."""
        pos, neg = self.encode(positive), self.encode(negative)
        return tile_to_common_length(pos, neg)


def tile_to_common_length(a: PromptEmbeds, b: PromptEmbeds) -> tuple[PromptEmbeds, PromptEmbeds]:
    length = math.lcm(a.hidden.shape[1], b.hidden.shape[1])

    def tiled(e: PromptEmbeds) -> PromptEmbeds:
        return PromptEmbeds(e.hidden.repeat(1, length // e.hidden.shape[1], 1), e.pooled)

    return tiled(a), tiled(b)
