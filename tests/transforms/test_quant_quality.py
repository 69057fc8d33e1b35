"""Quality of camelid's own quantization: perplexity of held-out text (written after the model was trained) with
the embedded SmolLM2's weights dense (fp32), as int8 and as int4, re-quantized by camelid from those weights.

The issue's bounds (int8 within 0.5%, int4 within 5%) hold for the defaults, groups of 32. The embedded file is
Q4_1 (4-bit groups of 32, Q8_0 embedding), so int4 in groups of 32 nearly reproduces its grid; int4 in groups of 64
rounds that 4-bit grid a second time onto another one, and int8 with one scale per channel is coarser than the
file's Q8_0 embedding: both are measured and bounded by what they lose here, not by the issue's bounds."""

import math

import pytest
import torch

from camelid.formats import load
from tests.peers.texts import UNSEEN

pytestmark = pytest.mark.slow


def perplexity(loaded) -> float:
    nll, n = 0.0, 0
    for text in UNSEEN:
        ids = torch.tensor([loaded.tokenizer.encode(text)])
        with torch.inference_mode():
            logits = loaded.model(ids[:, :-1]).float()
        nll += float(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
        n += ids.shape[1] - 1
    return math.exp(nll / n)


@pytest.fixture(scope="module")
def fp32():
    return perplexity(load("smollm2-135m", dtype=torch.float32, quant="none"))


@pytest.mark.parametrize(
    "quant,group,bound",
    [
        ("int8", None, 0.005),
        ("int4", None, 0.05),  # the defaults (groups of 32): the bounds
        ("int8", 0, 0.02),
        ("int4", 64, 0.40),  # measured +1.6% and +37%: a regression past these fails
    ],
)
def test_perplexity_of_held_out_text_stays_close_to_fp32(fp32, quant, group, bound):
    ppl = perplexity(load("smollm2-135m", quant=quant, group_size=group))
    change = ppl / fp32 - 1
    layout = "per channel" if group == 0 else group or "32 (default)"
    print(f"held-out perplexity: fp32 {fp32:.3f}, {quant} group {layout} {ppl:.3f} ({change:+.2%})")
    assert abs(change) <= bound
