import pytest
import torch

from clipft.cache.text_features import CachedTextFeatures
from clipft.model_registry import title_words
from clipft.models import load_model
from clipft.offline_model import create_lite0_minilm
from clipft.title_words import WordBag, add_title_words, lock_title_words
from clipft.training.optim import parameter_groups
from clipft.training.config import OptimCfg


def lite0():
    return load_model("lite0-minilm", "random")


def test_the_bag_comes_from_the_json_config():
    assert title_words("lite0-minilm") == 32768
    assert title_words("clipft-tiny") == 0 and title_words("ViT-B-32") == 0


def test_the_bag_averages_tokens_and_neighbouring_pairs_and_leaves_out_special_tokens():
    bag = WordBag(vocab_size=10, special_ids=[0, 1, 2], output_dim=3, buckets=7)
    tokens = torch.tensor([[1, 5, 6, 2, 0], [1, 5, 2, 0, 0]])  # [start] words [end] [pad]
    ids, mask = bag.ids_and_mask(tokens)
    assert mask.tolist() == [[False, True, True, False, False, False, True, False, False],
                             [False, True, False, False, False, False, False, False, False]]
    assert ids[0, :5].tolist() == [1, 5, 6, 2, 0] and 10 <= ids[0, 6] < 17  # the pair (5, 6) hashed past the vocabulary
    with torch.no_grad():
        bag.proj.weight.copy_(torch.eye(3, 64))
        out = bag(tokens)
    emb = bag.embedding.weight[:, :3]
    torch.testing.assert_close(out[0], (emb[5] + emb[6] + emb[ids[0, 6]]) / 3)
    torch.testing.assert_close(out[1], emb[5])


def test_words_start_at_zero_so_the_model_embeds_as_before_and_do_reach_the_embedding():
    model, _, tokenizer = lite0()
    tokens = tokenizer(["Puma Men Black Running Shoes", "Summer"])
    with torch.no_grad():
        before = model.encode_text(tokens)
        torch.testing.assert_close(before, model.text.proj(model.text.pooler(
            model.text.transformer(input_ids=tokens, attention_mask=(tokens != 0).long()), (tokens != 0).long())))
        model.text.words.proj.weight.normal_()
        assert not torch.allclose(model.encode_text(tokens), before)


def test_the_bag_is_the_same_at_every_load_and_leaves_the_global_generator_alone():
    torch.manual_seed(1)
    first = lite0()[0].text.words.embedding.weight
    torch.manual_seed(2)
    torch.testing.assert_close(lite0()[0].text.words.embedding.weight, first, rtol=0, atol=0)
    model, _ = create_lite0_minilm(from_checkpoint=True)
    state = torch.get_rng_state()
    add_title_words(model, None, 16)
    assert torch.equal(torch.get_rng_state(), state)  # adding the bag drew nothing from it


def test_a_checkpoint_from_before_the_bag_loads_and_embeds_as_it_did(tmp_path):
    model, _, tokenizer = lite0()
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("text.words.")}
    torch.save({"state_dict": old}, tmp_path / "old.pt")
    loaded = load_model("lite0-minilm", str(tmp_path / "old.pt"))[0]
    tokens = tokenizer(["Nike Women Red Top"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))


def test_a_checkpoint_missing_other_weights_is_still_refused(tmp_path):
    model = lite0()[0]
    partial = {k: v for k, v in model.state_dict().items() if k != "text.proj.weight"}
    torch.save({"state_dict": partial}, tmp_path / "partial.pt")
    with pytest.raises(Exception, match="text.proj.weight"):
        load_model("lite0-minilm", str(tmp_path / "partial.pt"))


def test_the_cached_text_path_adds_the_words_as_the_live_tower_does(tmp_path):
    model, _, tokenizer = lite0()
    model.lock_text_tower()
    model.eval()
    with torch.no_grad():
        model.text.words.proj.weight.normal_()
    texts = ["Navy Blue", "Puma Men Black Running Shoes"]
    cached = CachedTextFeatures(model.text, tokenizer, cache_dir=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(cached(texts), model.encode_text(tokenizer(texts)), rtol=1e-4, atol=1e-5)
    assert cached(texts).requires_grad  # the bag trains with the projection


def test_the_bag_trains_at_its_own_rate_and_the_towers_and_projections_at_theirs():
    model = lite0()[0]
    model.lock_text_tower()
    model.lock_image_tower()
    groups = parameter_groups(model, OptimCfg(lr=1e-5, lr_head=1e-3, lr_words=3e-2))
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert {rate[id(p)] for p in model.text.words.parameters()} == {3e-2}
    assert rate[id(model.text.proj.weight)] == 1e-3 and rate[id(model.logit_scale)] == 1e-3
    assert not any(g["weight_decay"] for g in groups if any(p is model.logit_scale for p in g["params"]))


def test_a_labeller_saved_before_the_bag_still_loads_and_a_damaged_one_is_named(tmp_path):
    from safetensors.torch import save_file

    from clipft.labeller_files import LabellerError, load_weights

    model = lite0()[0]
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in state.items() if not k.startswith("text.words.")}, tmp_path / "old.safetensors")
    fresh = lite0()[0]
    load_weights(fresh, tmp_path / "old.safetensors", "cpu", "a run from before the bag")
    torch.testing.assert_close(fresh.text.proj.weight, model.text.proj.weight)
    save_file({k: v for k, v in state.items() if k != "logit_scale"}, tmp_path / "damaged.safetensors")
    with pytest.raises(LabellerError, match="damaged.safetensors.*logit_scale"):
        load_weights(lite0()[0], tmp_path / "damaged.safetensors", "cpu", "a damaged run")


@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["fusion", "image"])
def test_the_bag_trains_only_in_runs_that_read_titles(tmp_path, inputs):
    from clipft.commands.sample_data import make_catalogue
    from clipft.training.checkpoint import load_weights as load_state_dict
    from conftest import run

    data = make_catalogue(tmp_path / "cat", n=24, size=32, seed=0)
    settings = [f"data={data}", "prompts=[color]", "model=lite0-minilm", "epochs=1", "batch_size=8",
                f"cache_dir={tmp_path / 'cache'}", "wise_alphas=[1.0]", f"inputs={inputs}", "lock_image=true",
                "lock_text=true"]
    run(["finetune", *[a for s in settings for a in ("--set", s)], "--out", str(tmp_path / "run"), "--quiet"])
    trained = load_state_dict(tmp_path / "run" / "last.pt")["text.words.proj.weight"]
    assert bool(trained.abs().sum() > 0) == (inputs == "fusion")


def test_a_tower_without_a_hugging_face_text_tower_is_refused():
    tiny = load_model("clipft-tiny", "random")[0]
    with pytest.raises(ValueError, match="title_words needs a Hugging Face text tower"):
        add_title_words(tiny, None, 16)


def test_a_bag_locked_at_zero_is_skipped_without_tokenising():
    model, _, tokenizer = lite0()
    model.lock_text_tower()
    assert not model.text.words.inert()  # trainable: it must run, to get its gradients
    lock_title_words(model)
    assert model.text.words.inert()
    calls = []

    def counting(texts):
        calls.append(texts)
        return tokenizer(texts)

    cached = CachedTextFeatures(model.text, counting, cache_dir=None)
    cached(["Navy Blue"])  # the transformer's output goes into the store
    calls.clear()  # from now on only the bag would tokenise
    with torch.no_grad():
        torch.testing.assert_close(cached(["Navy Blue"]), model.encode_text(tokenizer(["Navy Blue"])))
    assert calls == []
    with torch.no_grad():
        model.text.words.proj.weight.normal_()
    assert not model.text.words.inert()  # a trained bag runs even when locked
    cached(["Navy Blue"])
    assert len(calls) == 1
