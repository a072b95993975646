import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipft.losses import CaptionContrastiveLoss, caption_ids

loss_fn = CaptionContrastiveLoss()


def test_matches_open_clip_when_captions_are_distinct():
    torch.manual_seed(0)
    images, texts = torch.randn(6, 8), torch.randn(6, 8)
    ours = loss_fn(images, texts, torch.arange(6), torch.tensor(10.0))
    theirs = open_clip.ClipLoss()(F.normalize(images, dim=-1), F.normalize(texts, dim=-1), torch.tensor(10.0))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_hand_computed_value_on_a_tiny_batch():
    # three images, two captions; images 0 and 1 share caption 0. Unit vectors, scale 1,
    # so the logits are the cosines below.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([0, 0, 1])
    # logits (image x caption): [[1, 0], [0, 1], [1, 0]]
    e = math.e
    i2t = (-math.log(e / (e + 1)) - math.log(1 / (1 + e)) - math.log(1 / (e + 1))) / 3
    # caption 0 (column [1, 0, 1]): positives images 0 and 1, negative image 2 (logit 1);
    #   image 0: -log(e / (e + e)); image 1: -log(1 / (1 + e)) -- image 1 is never image 0's negative
    # caption 1 (column [0, 1, 0]): positive image 2 (logit 0), negatives images 0 and 1 (logits 0, 1):
    #   image 2: -log(1 / (1 + 1 + e))
    t2i = (-math.log(e / (e + e)) - math.log(1 / (1 + e)) - math.log(1 / (2 + e))) / 3
    assert loss_fn(images, texts, ids, torch.tensor(1.0)).item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_same_caption_images_are_not_negatives():
    # two photos of one class and one of another, perfectly separated by class:
    # the loss must vanish as the scale grows, which it cannot if same-class photos were negatives.
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([0, 0, 1])
    assert loss_fn(images, texts, ids, torch.tensor(100.0)).item() < 1e-6
    naive = open_clip.ClipLoss()(images, texts[ids], torch.tensor(100.0))
    assert naive.item() > 0.3  # log 2 for each confused pair: the naive loss can't get there


def test_gradients_flow_to_both_sides():
    images = torch.randn(4, 3, requires_grad=True)
    texts = torch.randn(2, 3, requires_grad=True)
    loss_fn(images, texts, torch.tensor([0, 1, 1, 0]), torch.tensor(5.0)).backward()
    assert images.grad.abs().sum() > 0 and texts.grad.abs().sum() > 0


def test_caption_ids_deduplicates_in_order():
    captions, ids = caption_ids(["Red", "Blue", "Red", "Green"])
    assert captions == ["Red", "Blue", "Green"]
    assert ids.tolist() == [0, 1, 0, 2]
