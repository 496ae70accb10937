"""The wire counts exact bytes both ways and refuses anything that is not a float activation."""

from __future__ import annotations

import io

import pytest
import torch

from huscf_lightning.nets import ReferenceGenerator
from huscf_lightning.split import SplitNetwork
from huscf_lightning.split.wire import DOWN, UP, Wire, WireError


def test_byte_counts_equal_analytic_activation_sizes_both_ways() -> None:
    wire = Wire()
    split = SplitNetwork(ReferenceGenerator(), [(1, 1), (2, 2)], "G", wire)
    b0, b1 = 3, 5
    z = [torch.randn(b0, 100), torch.randn(b1, 100)]
    y = [torch.randint(0, 10, (b0,)), torch.randint(0, 10, (b1,))]
    outs = split(z, y)
    f32 = 4
    # client 0: head = block 0 -> 256x7x7 up; tail = block 4 <- output of block 3, 64x28x28
    assert wire.total(UP, "G.head", 0) == b0 * 256 * 7 * 7 * f32
    assert wire.total(DOWN, "G.tail", 0) == b0 * 64 * 28 * 28 * f32
    # client 1: head = blocks 0-1 -> 128x14x14 up; tail = blocks 3-4 <- output of block 2, 128x14x14
    assert wire.total(UP, "G.head", 1) == b1 * 128 * 14 * 14 * f32
    assert wire.total(DOWN, "G.tail", 1) == b1 * 128 * 14 * 14 * f32
    activations = dict(wire.bytes)
    (outs[0].sum() + outs[1].sum()).backward()
    gradients = {k: v for k, v in wire.bytes.items() if k[3] == "gradient"}
    # every activation's gradient came back the other way with the same size
    for (client, cut, direction, _), n in activations.items():
        back = DOWN if direction == UP else UP
        assert gradients[(client, cut, back, "gradient")] == n
    assert wire.dtypes_carried == {torch.float32}


@pytest.mark.parametrize("tensor", [torch.tensor([1, 2, 3]), torch.tensor([True]), torch.zeros(2, dtype=torch.uint8)])
def test_non_floating_tensors_are_refused(tensor: torch.Tensor) -> None:
    with pytest.raises(WireError, match="only floating-point"):
        Wire().send(tensor, 0, "D.head", UP)


def test_reset_forgets_counts() -> None:
    wire = Wire()
    wire.send(torch.zeros(2, 3), 0, "G.head", UP)
    assert wire.total() == 24
    wire.reset()
    assert wire.total() == 0
    assert wire.dtypes_carried == {torch.float32}


def test_counts_survive_a_checkpoint_round_trip() -> None:
    wire = Wire()
    x = torch.randn(3, 5, requires_grad=True)
    wire.send(x, 1, "D.head", "up").sum().backward()
    restored = Wire()
    restored.load_state_dict(torch.load(_saved(wire.state_dict()), weights_only=True))
    assert dict(restored.bytes) == dict(wire.bytes) == {(1, "D.head", "up", "activation"): 60, (1, "D.head", "down", "gradient"): 60}
    assert restored.dtypes_carried == {torch.float32}


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_a_group_crossing_counts_each_clients_part_and_refuses_labels() -> None:
    wire = Wire()
    parts = [torch.randn(3, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)]
    carried = wire.send_group(torch.cat(parts), [7, 2], [3, 5], "D.head", UP)
    carried.sum().backward()
    assert dict(wire.bytes) == {
        (7, "D.head", UP, "activation"): 3 * 4 * 4, (2, "D.head", UP, "activation"): 5 * 4 * 4,
        (7, "D.head", DOWN, "gradient"): 3 * 4 * 4, (2, "D.head", DOWN, "gradient"): 5 * 4 * 4,
    }
    with pytest.raises(WireError, match=r"clients \[7, 2\]"):
        wire.send_group(torch.tensor([1, 2, 3, 4]), [7, 2], [2, 2], "D.head", UP)
    with pytest.raises(WireError, match="one size per client"):
        wire.send_group(torch.zeros(4, 2), [7, 2], [4], "D.head", UP)
