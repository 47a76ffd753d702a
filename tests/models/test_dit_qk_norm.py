"""DiT's QK-norm option (RMSNorm on queries and keys per head, Esser et al. 2024, sec. 5.3.2): the attention against
a hand-written reference, the state-dict keys (off: the keys of earlier checkpoints), validation."""

from dataclasses import replace

import pytest
import torch

from noisecraft.errors import ConfigError
from noisecraft.models.dit import DIT_PRESETS, DiT, SelfAttention

TINY = replace(DIT_PRESETS["tiny"], input_size=8)


def test_qk_norm_attention_equals_reference():
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, qk_norm=True)
    with torch.no_grad():
        attn.norm_q.weight.copy_(torch.rand(8) + 0.5)
        attn.norm_k.weight.copy_(torch.rand(8) + 0.5)
    x = torch.randn(3, 5, 16)
    q, k, v = attn.qkv(x).view(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)

    def rms(t, w):
        return t / torch.sqrt(t.square().mean(-1, keepdim=True) + 1e-6) * w

    q, k = rms(q, attn.norm_q.weight), rms(k, attn.norm_k.weight)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-6)


def test_qk_norm_keys_and_zero_init():
    plain, normed = DiT(TINY), DiT(replace(TINY, qk_norm=True))
    extra = set(normed.state_dict()) - set(plain.state_dict())
    assert extra == {f"blocks.{i}.attn.norm_{w}.weight" for i in range(TINY.depth) for w in "qk"}
    assert set(plain.state_dict()) <= set(normed.state_dict())  # off: the keys of checkpoints before the option
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert torch.equal(normed(x, t), torch.zeros_like(x))  # adaLN-Zero still makes the output 0 at init


def test_qk_norm_validation():
    with pytest.raises(ConfigError, match="qk_norm"):
        replace(TINY, qk_norm=1)
