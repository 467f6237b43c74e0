"""The CNN embeddings: the weights' names and shapes a saved posterior holds, and their checks.

A posterior saved before the two CNN embeddings shared their code must still load: the keys
and shapes below are those that code wrote (commit 5373c77).
"""

from __future__ import annotations

import pytest
import torch

import flowforge as ff

SAVED = {
    "cnn1d": (
        lambda: ff.nn.Conv1dEmbedding((2, 8), out_features=4, filters=(4, 3), hidden=(16,)),
        {
            "conv.0.weight": (4, 2, 5),
            "conv.0.bias": (4,),
            "conv.3.weight": (3, 4, 5),
            "conv.3.bias": (3,),
            "head.flat": (180,),  # the MLP's weights in one flat parameter
        },
    ),
    "cnn2d": (
        lambda: ff.nn.Conv2dEmbedding((4, 4), out_features=4, filters=(4,), hidden=(16,)),
        {
            "conv.0.weight": (4, 1, 3, 3),
            "conv.0.bias": (4,),
            "head.flat": (340,),
        },
    ),
}


@pytest.mark.parametrize("name", sorted(SAVED))
def test_saved_weights_keep_their_names_and_shapes(name: str) -> None:
    make, expected = SAVED[name]
    net = make()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    assert type(net) is ff.nn.embedding.EMBEDDINGS[name]
    rebuilt = ff.nn.embedding.build_embedding(name, net.config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(3, *net.in_shape)
    assert torch.equal(rebuilt(x), net(x))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ff.nn.Conv1dEmbedding((1, 2, 3)),
            "Conv1dEmbedding: expected in_shape (L,) or (channels, L) and an odd kernel, "
            "got (1, 2, 3) and 5",
        ),
        (
            lambda: ff.nn.Conv2dEmbedding((1, 8, 8), kernel=2),
            "Conv2dEmbedding: expected in_shape (C, H, W) or (H, W) and an odd kernel, "
            "got (1, 8, 8) and 2",
        ),
        (
            lambda: ff.nn.Conv1dEmbedding(16)(torch.randn(3, 15)),
            "Conv1dEmbedding: expected x of shape (*, 16), got (3, 15)",
        ),
        (
            lambda: ff.nn.Conv2dEmbedding((1, 8, 8))(torch.randn(3, 8, 8)),
            "Conv2dEmbedding: expected x of shape (*, 1, 8, 8), got (3, 8, 8)",
        ),
    ],
)
def test_bad_shapes_are_refused_by_name(make, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value) == message


def test_a_series_without_channels_is_one_channel() -> None:
    torch.manual_seed(0)
    flat = ff.nn.Conv1dEmbedding(8, out_features=3, filters=(2,), hidden=(4,))
    torch.manual_seed(0)
    one = ff.nn.Conv1dEmbedding((1, 8), out_features=3, filters=(2,), hidden=(4,))
    x = torch.randn(2, 5, 8)
    assert torch.equal(flat(x), one(x[..., None, :]))
