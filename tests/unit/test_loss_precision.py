"""Held-out log-probs match a float64 reference on the real bundled model.

The engine takes log p = logit - logsumexp in float32. The pre-engine code used float32
log_softmax, which on SmolLM2's peaked logits came out about 7e-6 nats/token too high (a
bias, not noise): demo losses moved by ~2.5e-6 relative when the engine replaced it. This test
pins the engine to the float64 answer so that such a bias cannot come back unseen."""
from __future__ import annotations

import pytest
import torch

from cusprun.evaluation.likelihood import encode, score_sequences

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

TEXTS = ["The heart pumps blood through the body. Doctors measure blood pressure with a cuff "
         "and record two numbers, the systolic and the diastolic pressure. " * 2,
         "In the beginning God created the heaven and the earth. And the earth was without form, "
         "and void. " * 2,
         "Question: What is insulin? Answer: Insulin is a peptide hormone produced by beta cells "
         "of the pancreatic islets."]


@torch.no_grad()
def test_engine_logprobs_equal_a_float64_reference():
    from cusprun.models import load_model
    from cusprun.models.sources import resolve_model

    model, tok = load_model(resolve_model("smollm2-135m").path)
    enc = [encode(tok, t, max_tokens=96) for t in TEXTS]
    got = score_sequences(model, enc, batch_size=8, pad_id=0, progress=False)
    for e, (total, n) in zip(enc, got):
        ids = torch.tensor([e.ids])
        logits = model(input_ids=ids).logits[0, -n - 1:-1].double()
        ref = (logits - torch.logsumexp(logits, -1, keepdim=True)).gather(
            1, ids[0, -n:, None]).sum().item()
        assert n > 20 and abs(total - ref) / n < 1e-6, (n, (total - ref) / n)
