"""Contrastive loss for batches in which several images may share one caption."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CaptionContrastiveLoss(nn.Module):
    """CLIP's symmetric contrastive loss, computed against the *distinct* captions of a batch.

    With bare-label captions ("Navy Blue"), many photos in a batch share a caption. OpenCLIP's
    ``ClipLoss`` assumes one caption per image, so two photos of one class would count as each
    other's negatives and the loss would push apart exactly what it should pull together.
    Here every same-caption pair is a positive:

    - image -> text: cross-entropy of each image over the batch's distinct captions, its own
      caption the target;
    - text -> image: for each (caption, image of that caption) pair, a softmax over that image
      and the images of *other* captions only, so the caption's other positives never sit in
      the denominator as negatives.

    Each half is averaged over the images; the loss is their mean. With all captions distinct
    it equals ``open_clip.ClipLoss``.

    ``image_features`` (N, d) and ``text_features`` (M, d) are normalised here;
    ``caption_ids`` (N,) gives each image's row in ``text_features``. ``also_positive`` (N, M),
    for products with several values ("Black|White", one example per value): the captions of
    the product's other values, which are neither its target nor its negatives.
    """

    def forward(self, image_features, text_features, caption_ids, logit_scale, also_positive=None):
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        logits = logit_scale * image_features @ text_features.T  # (N, M)
        positive = F.one_hot(caption_ids, num_classes=text_features.shape[0]).bool()  # (N, M)
        if also_positive is not None:
            image_to_text = F.cross_entropy(logits.masked_fill(also_positive, float("-inf")), caption_ids)
            positive = positive | also_positive
        else:
            image_to_text = F.cross_entropy(logits, caption_ids)

        # per caption: log-sum-exp over the images that are not its positives (-inf if none)
        negatives = torch.logsumexp(logits.masked_fill(positive, float("-inf")), dim=0)  # (M,)
        own = logits.gather(1, caption_ids[:, None]).squeeze(1)  # (N,) image with its caption
        text_to_image = (torch.logaddexp(own, negatives[caption_ids]) - own).mean()
        return (image_to_text + text_to_image) / 2


def caption_ids(captions: list[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct captions (in first-seen order) and each item's index into them."""
    index: dict[str, int] = {}
    ids = [index.setdefault(c, len(index)) for c in captions]
    return list(index), torch.tensor(ids, dtype=torch.long)
