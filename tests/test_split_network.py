"""Split forward/backward equals the unsplit network; the server runs shared blocks once per step."""

from __future__ import annotations

import itertools

import pytest
import torch

from huscf_lightning.exchange import Wire
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import SplitNetwork, valid_head_tails


def _inputs(name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 10, (batch,))
    if name == "G":
        return torch.randn(batch, 100), labels
    return torch.rand(batch, 1, 28, 28) * 2 - 1, labels


def _template(name: str):
    return ReferenceGenerator() if name == "G" else ReferenceDiscriminator()


@pytest.mark.parametrize("name", ["G", "D"])
@pytest.mark.parametrize("train", [True, False])
def test_single_client_split_equals_unsplit_forward_and_gradients(name: str, train: bool) -> None:
    template = _template(name)
    for head_tail in valid_head_tails(template.num_blocks):
        split = SplitNetwork(template, [head_tail], name, Wire())
        template.train(train)
        split.train(train)
        x, y = _inputs(name, 6)
        x_ref = x.clone().requires_grad_(name == "D")
        x_split = x.clone().requires_grad_(name == "D")
        ref = template(x_ref, y)
        out = split([x_split], [y])[0]
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        upstream = torch.randn_like(ref)
        template.zero_grad()
        ref.backward(upstream)
        out.backward(upstream)
        for j, block in enumerate(template.blocks):
            copy = split.block_used_by(0, j)
            for (pname, p_ref), (_, p_split) in zip(block.named_parameters(), copy.named_parameters()):
                torch.testing.assert_close(p_split.grad, p_ref.grad, msg=f"{name} cut {head_tail} block {j} {pname}")
        if name == "D":
            torch.testing.assert_close(x_split.grad, x_ref.grad)


def test_mixed_cuts_run_each_server_block_once_over_the_concatenated_batch() -> None:
    template = ReferenceDiscriminator()
    cuts = [(1, 1), (2, 2), (1, 3), (2, 1), (3, 1)]
    split = SplitNetwork(template, cuts, "D", Wire())
    calls: dict[int, list[int]] = {}
    for j, block in split.server_blocks.items():
        block.register_forward_hook(lambda m, inp, out, j=int(j): calls.setdefault(j, []).append(inp[0].shape[0]))
    sizes = [3, 4, 5, 6, 7]
    xs, ys = zip(*(_inputs("D", n) for n in sizes))
    split.eval()
    outs = split(list(xs), list(ys))
    for j in range(template.num_blocks):
        members = [i for i, (h, t) in enumerate(cuts) if h <= j < template.num_blocks - t]
        if members:
            assert calls[j] == [sum(sizes[i] for i in members)], f"block {j}"
        else:
            assert j not in calls
    template.eval()
    for i in range(len(cuts)):
        torch.testing.assert_close(outs[i], split.client_path(i)(xs[i], ys[i]))
        torch.testing.assert_close(outs[i], template(xs[i], ys[i]))


def test_inactive_clients_are_skipped() -> None:
    split = SplitNetwork(ReferenceGenerator(), [(1, 1), (2, 2)], "G", Wire()).eval()
    z, y = _inputs("G", 4)
    outs = split([None, z], [None, y])
    assert outs[0] is None
    torch.testing.assert_close(outs[1], split.client_path(1)(z, y))


def test_common_server_block() -> None:
    assert SplitNetwork(ReferenceDiscriminator(), [(1, 1), (2, 2)], "D", Wire()).common_server_block() == 2
    assert SplitNetwork(ReferenceDiscriminator(), [(1, 3), (3, 1)], "D", Wire()).common_server_block() is None


def test_every_client_owns_separate_copies_and_server_shares_one() -> None:
    split = SplitNetwork(ReferenceGenerator(), [(1, 1), (1, 1), (2, 1)], "G", Wire())
    assert split.client_blocks[0]["0"] is not split.client_blocks[1]["0"]
    assert split.block_used_by(0, 2) is split.block_used_by(2, 2) is split.server_blocks["2"]
    assert set(split.server_blocks) == {"1", "2", "3"}
    assert set(split.client_blocks[2]) == {"0", "1", "4"}
    assert all(not a.data_ptr() == b.data_ptr() for a, b in itertools.product(
        split.client_blocks[0].parameters(), split.client_blocks[1].parameters()))
