"""Multiple-choice scoring with each question computed once (packed options, block-causal mask)
gives the scores of scoring every option as its own sequence, on every supported family."""
from __future__ import annotations

import pytest
import torch

from cusprun.evaluation import MCItem, encode, mc_accuracy
from cusprun.evaluation.likelihood import encode_item
from cusprun.evaluation.packed import block_mask, pack, score_packed
from tests.support import TINY_FAMILIES, make_tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITEMS = [MCItem(question="Article: the heart pumps blood through the body.\nTopic:",
                options=[" health", " a very long sporting option", " x", " music and art"],
                answer_index=0),
         MCItem(question="Q?", options=[" yes", " no"], answer_index=1),
         MCItem(question="Translate: bonjour\nEnglish:", options=[" hello there", " good night",
                                                               " thanks"], answer_index=0)]


@torch.no_grad()
def _alone(model, ids: list[int], n_scored: int) -> float:
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return float(sum(lp[t - 1, ids[t]] for t in range(len(ids) - n_scored, len(ids))))


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_packed_scores_equal_one_sequence_per_option(arch):
    # a window wider than any item so Gemma3's sliding layers can take the packed layout too
    extra = {"sliding_window": 256} if arch == "Gemma3ForCausalLM" else {}
    model, _ = make_tiny_model(arch, **extra)
    model.eval()
    tok = tiny_tokenizer()
    enc = [encode_item(tok, it) for it in ITEMS]
    packed = [pack(e) for e in enc]
    assert all(p is not None for p in packed)
    got = score_packed(model, packed, batch_size=2, pad_id=tok.pad_token_id, progress=False)
    for item_enc, item_got in zip(enc, got):
        for e, g in zip(item_enc, item_got):
            assert g == pytest.approx(_alone(model, e.ids, e.n_scored), rel=1e-5, abs=1e-4)
    res = mc_accuracy(model, tok, ITEMS, batch_size=2, progress=False)
    plain = mc_accuracy(model, tok, ITEMS, batch_size=2, progress=False, shared_prefix=False)
    assert res.n_packed == len(ITEMS) and plain.n_packed == 0
    assert res.predictions == plain.predictions and res.correct == plain.correct
    for a, b in zip(res.scores, plain.scores):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


def test_items_that_cannot_share_a_question_fall_back():
    # tiny Gemma3 slides over 8 positions: only the short 'Q?' item fits in one window
    model, _ = make_tiny_model("Gemma3ForCausalLM")
    tok = tiny_tokenizer()
    res = mc_accuracy(model.eval(), tok, ITEMS, progress=False)
    plain = mc_accuracy(model, tok, ITEMS, progress=False, shared_prefix=False)
    assert res.n_packed == 1 and res.predictions == plain.predictions
    assert res.scores[0] == plain.scores[0] and res.scores[2] == plain.scores[2]
    assert res.scores[1] == pytest.approx(plain.scores[1], rel=1e-5)
    # a prompt cut from the left by max_tokens differently per option length is not one question
    long_q = MCItem(question="word " * 40, options=[" a", " much longer option " * 3],
                    answer_index=0)
    assert pack([encode(tok, o, long_q.question, max_tokens=64) for o in long_q.options]) is None
    # so an item's options are encoded with one cut, made for the longest option
    shared = encode_item(tok, long_q, max_tokens=64)
    assert pack(shared) is not None and max(len(e.ids) for e in shared) == 64


def test_block_mask_lets_options_see_the_question_and_themselves_only():
    pos = torch.tensor([[0, 1, 2, 2, 3, 2, 0]])
    seg = torch.tensor([[0, 0, 1, 1, 1, 2, -1]])   # question, option 1 (3 tokens), option 2, pad
    m = block_mask(pos, seg, torch.float32)[0, 0] == 0
    assert m[3].tolist() == [True, True, True, True, False, False, False]   # option 1, 2nd token
    assert m[5].tolist() == [True, True, False, False, False, True, False]  # option 2 only sees Q
    assert m[1].tolist() == [True, True, False, False, False, False, False]  # question is causal
    assert m[6].tolist() == [False] * 6 + [True]                            # padding: itself


def test_options_share_the_question_position_in_the_head(monkeypatch):
    """Every option's first token is predicted from the question's last position: the head (and
    its log-sum-exp over the vocabulary) runs on that position once per item, not once per
    option, and the scores stay those of each option alone."""
    import cusprun.engine.logprobs as lp_mod

    model, _ = make_tiny_model("LlamaForCausalLM")
    model.eval()
    tok = tiny_tokenizer()
    enc = [encode_item(tok, it) for it in ITEMS]
    packed = [pack(e) for e in enc]
    rows_seen = []
    real = lp_mod.token_logprobs

    def counting(lm, hidden, targets, **kw):
        rows_seen.append(sum(h.shape[0] for h in hidden.values()))
        return real(lm, hidden, targets, **kw)

    monkeypatch.setattr(lp_mod, "token_logprobs", counting)
    got = score_packed(model, packed, batch_size=2, pad_id=tok.pad_token_id, progress=False)
    scored = sum(len(o) for p in packed for o in p.options)
    shared = sum(len(p.options) - 1 for p in packed)     # repeated question positions
    assert rows_seen == [scored - shared]
    for it, e, g in zip(packed, enc, got):
        want = [_alone(model, x.ids, x.n_scored) for x in e]
        assert g == pytest.approx(want, abs=1e-4)
