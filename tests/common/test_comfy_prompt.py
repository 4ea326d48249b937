"""ComfyUI prompt encoding on SDXL's two (tiny) text encoders: chunking past 77 tokens, the
empty-prompt interpolation of weighted tokens, and tiling to a common length (comfy_prompt.py)."""
from __future__ import annotations

import pytest
import torch

from pipelines.common.comfy_prompt import (
    CHUNK_LENGTH,
    ComfyPromptEncoder,
    chunk_tokens,
    tile_to_common_length,
)
from pipelines.common.tiny_sdxl import build_tiny_inpaint_pipeline, write_tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from transformers import CLIPTokenizer

    pipe = build_tiny_inpaint_pipeline(seed=0)
    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    return ComfyPromptEncoder(tokenizer, pipe.text_encoder.eval(), tokenizer, pipe.text_encoder_2.eval())


def plain_hidden(encoder, ids: list[int]) -> torch.Tensor:
    out_l = encoder.text_encoder(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    out_g = encoder.text_encoder_2(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    return torch.cat([out_l, out_g], -1)


def test_unweighted_prompt_is_the_plain_penultimate_states(encoder):
    tok = encoder.tokenizer
    ids = [tok.bos_token_id] + tok("ab cd")["input_ids"][1:-1] + [tok.eos_token_id]
    ids += [tok.pad_token_id] * (CHUNK_LENGTH - len(ids))
    got = encoder.encode("ab cd")
    with torch.no_grad():
        want = plain_hidden(encoder, ids)
    assert got.hidden.shape == (1, CHUNK_LENGTH, 96) and got.pooled.shape == (1, 64)
    torch.testing.assert_close(got.hidden, want)


def test_weighted_tokens_move_from_the_empty_prompt(encoder):
    plain = encoder.encode("ab cd").hidden
    weighted = encoder.encode("ab (cd:1.5)").hidden
    tok = encoder.tokenizer
    empty_ids = [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * (CHUNK_LENGTH - 2)
    with torch.no_grad():
        empty = plain_hidden(encoder, empty_ids)
    n_ab = len(tok("ab")["input_ids"]) - 2
    n_cd = len(tok("cd")["input_ids"]) - 2
    cd = slice(1 + n_ab, 1 + n_ab + n_cd)
    torch.testing.assert_close(weighted[:, cd], (plain[:, cd] - empty[:, cd]) * 1.5 + empty[:, cd])
    torch.testing.assert_close(weighted[:, :cd.start], plain[:, :cd.start])
    torch.testing.assert_close(weighted[:, cd.stop:], plain[:, cd.stop:])


def test_long_prompts_are_chunked_not_truncated(encoder):
    long = " ".join(["ab"] * 60)  # 120 tokens with the tiny byte-level vocabulary
    out = encoder.encode(long)
    assert out.hidden.shape[1] == 2 * CHUNK_LENGTH


def test_a_short_word_does_not_straddle_chunks():
    words = [[(1, 1.0)] * 74, [(2, 1.0)] * 3]
    chunks = chunk_tokens(words, start=100, end=101, pad=0)
    assert len(chunks) == 2 and all(len(c) == CHUNK_LENGTH for c in chunks)
    assert [t for t, _ in chunks[0]][74:77] == [1, 101, 0]
    assert [t for t, _ in chunks[1]][:5] == [100, 2, 2, 2, 101]


def test_a_long_word_is_split_across_chunks():
    chunks = chunk_tokens([[(1, 1.0)] * 80], start=100, end=101, pad=0)
    assert [t for t, _ in chunks[0]].count(1) == 75 and [t for t, _ in chunks[1]].count(1) == 5


def test_cond_and_uncond_tile_to_a_common_length(encoder):
    short, long = encoder.encode("ab"), encoder.encode(" ".join(["ab"] * 60))
    a, b = tile_to_common_length(short, long)
    assert a.hidden.shape == b.hidden.shape == (1, 2 * CHUNK_LENGTH, 96)
    torch.testing.assert_close(a.hidden[:, CHUNK_LENGTH:], short.hidden)
