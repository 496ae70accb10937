"""Split forward/backward equals the unsplit network; the server runs shared blocks once per step."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from huscf_lightning.nets import NetworkError, ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import SplitNetwork, valid_head_tails
from huscf_lightning.split.wire import Wire


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
    assert valid_head_tails(template.num_blocks) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]
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
        grads = split.used_gradients(0)
        for j, block in enumerate(template.blocks):
            for pname, p_ref in block.named_parameters():
                torch.testing.assert_close(grads[(j, pname)], p_ref.grad, msg=f"{name} cut {head_tail} block {j} {pname}")
        if name == "D":
            torch.testing.assert_close(x_split.grad, x_ref.grad)


@pytest.mark.parametrize("name", ["G", "D"])
def test_mixed_cuts_run_each_server_block_once_over_the_concatenated_batch(name: str) -> None:
    template = _template(name)
    cuts = [(1, 1), (2, 2), (1, 3), (2, 1), (3, 1)]
    split = SplitNetwork(template, cuts, name, Wire())
    calls: dict[int, list[int]] = {}
    for j, block in split.server_blocks.items():
        block.register_forward_hook(lambda m, inp, out, j=int(j): calls.setdefault(j, []).append(inp[0].shape[0]))
    sizes = [3, 4, 5, 6, 7]
    xs, ys = zip(*(_inputs(name, n) for n in sizes))
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


@pytest.mark.parametrize("name", ["G", "D"])
def test_mixed_cuts_route_each_clients_gradient_to_the_copies_it_used(name: str) -> None:
    """A shared server block's gradient is the sum of its members' gradients; a client's own copy gets only its own."""
    template = _template(name).double().eval()  # float64: sums in another order agree to rounding
    cuts = [(1, 1), (2, 2), (1, 3), (2, 1), (3, 1)]
    split = SplitNetwork(template, cuts, name, Wire()).eval()
    sizes = [3, 4, 5, 6, 7]
    xs, ys = zip(*((x.double(), y) for x, y in (_inputs(name, n) for n in sizes)))
    outs = split(list(xs), list(ys))
    upstreams = [torch.randn_like(out) for out in outs]
    sum((out * u).sum() for out, u in zip(outs, upstreams)).backward()
    own = []  # per client: the gradient of every parameter of the unsplit network, from that client alone
    for x, y, u in zip(xs, ys, upstreams):
        template.zero_grad()
        (template(x, y) * u).sum().backward()
        own.append([[p.grad.clone() for p in block.parameters()] for block in template.blocks])
    for j in range(template.num_blocks):
        if str(j) in split.server_blocks:
            members = split.server_members[j]
            for k, p in enumerate(split.server_blocks[str(j)].parameters()):
                torch.testing.assert_close(p.grad, sum(own[i][j][k] for i in members), msg=f"server block {j}")
        for i in split.local_members[j]:
            grads = split.used_gradients(i)
            for k, (pname, _) in enumerate(template.blocks[j].named_parameters()):
                torch.testing.assert_close(grads[(j, pname)], own[i][j][k], msg=f"client {i} block {j}")


def test_inactive_clients_are_skipped() -> None:
    split = SplitNetwork(ReferenceGenerator(), [(1, 1), (2, 2)], "G", Wire()).eval()
    z, y = _inputs("G", 4)
    outs = split([None, z], [None, y])
    assert outs[0] is None
    torch.testing.assert_close(outs[1], split.client_path(1)(z, y))


def test_common_server_block() -> None:
    assert SplitNetwork(ReferenceDiscriminator(), [(1, 1), (2, 2)], "D", Wire()).common_server_block() == 2
    assert SplitNetwork(ReferenceDiscriminator(), [(1, 3), (3, 1)], "D", Wire()).common_server_block() is None


def test_every_client_owns_a_row_of_each_stack_and_server_shares_one() -> None:
    split = SplitNetwork(ReferenceGenerator(), [(1, 1), (1, 1), (2, 1)], "G", Wire())
    assert set(split.server_blocks) == {"1", "2", "3"}
    assert set(split.client_stacks) == {"0", "1", "4"}
    assert split.local_members[0] == (0, 1, 2) and split.local_members[1] == (2,)  # block 1: client 2's head only
    weight = split.client_stacks["0"].get_parameter("linear.weight")
    assert weight.shape == (3, *ReferenceGenerator().blocks[0].linear.weight.shape)  # one row per client
    assert isinstance(weight, nn.Parameter) and len(list(split.client_stacks.parameters())) == len(
        list(itertools.chain(*(ReferenceGenerator().blocks[j].parameters() for j in (0, 1, 4)))))  # no per-client copy
    used = [split.used_tensors(i) for i in range(3)]
    assert used[0][(2, "0.weight")] is used[2][(2, "0.weight")] is split.server_blocks["2"].get_parameter("0.weight")
    rows = [u[(0, "linear.weight")] for u in used]
    assert all(r._base is weight for r in rows) and len({r.data_ptr() for r in rows}) == 3  # views of separate rows


def _perturbed(split: SplitNetwork) -> SplitNetwork:
    """Give every client copy its own weights, so a mix-up between clients would show."""
    with torch.no_grad():
        for p in split.client_stacks.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return split


@pytest.mark.parametrize("name", ["G", "D"])
def test_clients_batched_with_vmap_equal_clients_run_one_by_one(name: str) -> None:
    # float64, so that the other summation order cannot flip a ReLU and the comparison can be tight
    template = _template(name).double()
    cuts = [(1, 1), (2, 1), (1, 2), (2, 2), (1, 1), (2, 2)]
    batched = _perturbed(SplitNetwork(template, cuts, name, Wire(), batch_clients=True)).train()
    looped = copy.deepcopy(batched)
    looped.batch_clients, looped.wire = False, Wire()
    sizes = [6, 6, 6, 6, 6, 4]  # the last client's batch has another shape: it runs on its own
    xs, ys = zip(*(_inputs(name, n) for n in sizes))
    xs = [x.double() for x in xs]
    outs_b = batched([x.clone().requires_grad_(name == "D") for x in xs], list(ys))
    outs_l = looped([x.clone().requires_grad_(name == "D") for x in xs], list(ys))
    for a, b in zip(outs_b, outs_l):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    weights = [torch.randn_like(o) for o in outs_b]
    sum((o * w).sum() for o, w in zip(outs_b, weights)).backward()
    sum((o * w).sum() for o, w in zip(outs_l, weights)).backward()
    for (key, p_b), p_l in zip(batched.named_parameters(), looped.parameters()):
        torch.testing.assert_close(p_b.grad, p_l.grad, rtol=1e-8, atol=1e-9, msg=lambda m, key=key: f"{key}: {m}")
    for (key, b_b), b_l in zip(batched.named_buffers(), looped.buffers()):  # batch-norm statistics per client
        torch.testing.assert_close(b_b, b_l, rtol=1e-10, atol=1e-12, msg=lambda m, key=key: f"{key}: {m}")
    assert dict(batched.wire.bytes) == dict(looped.wire.bytes)


def test_clients_sharing_a_block_run_it_in_one_call() -> None:
    split = SplitNetwork(ReferenceDiscriminator(), [(1, 1), (1, 1), (2, 2)], "D", Wire(), batch_clients=True)
    calls = []
    split.client_stacks["0"].register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape))
    xs, ys = zip(*(_inputs("D", 5) for _ in range(3)))
    split(list(xs), list(ys))
    assert len(calls) == 1  # block 0 of all three clients: one vmapped call, not three


class ItemScale(nn.Module):
    """A block torch.func.vmap cannot run: it reads a tensor's value into Python."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(100, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float(x.abs().max())


def test_a_block_vmap_cannot_run_is_a_clear_error_and_runs_unbatched() -> None:
    template = ReferenceGenerator()
    template.blocks[4] = nn.Sequential(ItemScale(), nn.Linear(100, 784), nn.Unflatten(1, (1, 28, 28)))
    template.blocks[3] = nn.Sequential(nn.Flatten(), nn.LazyLinear(100))
    z, y = _inputs("G", 4)
    template(z, y)  # materialise the lazy layer
    inputs = ([z, z.clone()], [y, y.clone()])
    with pytest.raises(NetworkError, match="batch_clients=false"):
        SplitNetwork(template, [(1, 1), (1, 1)], "G", Wire(), batch_clients=True)(*inputs)
    outs = SplitNetwork(template, [(1, 1), (1, 1)], "G", Wire(), batch_clients=False)(*inputs)
    assert outs[0].shape == (4, 1, 28, 28)
