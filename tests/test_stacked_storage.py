"""The stacked client storage equals the per-module implementation it replaced, step for step (float64).

The reference (`per_client_reference.PerClientSplitNetwork`) keeps a module per client per block; the
package's `SplitNetwork` keeps one stacked module per block. Both start from the same per-client
weights and take several Adam steps with mixed cuts and a client whose batch has another size: the
outputs, every client's gradients, the batch-norm running statistics, the Adam states and the wire's
bytes must agree.
"""

from __future__ import annotations

import pytest
import torch
from per_client_reference import PerClientSplitNetwork

from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import SplitNetwork
from huscf_lightning.split.chunked_adam import ChunkedAdam
from huscf_lightning.split.stacked import RowCalls, stack_block
from huscf_lightning.split.wire import Wire

CUTS = [(1, 1), (2, 1), (1, 2), (2, 2), (1, 1), (3, 1)]
SIZES = [5, 5, 5, 5, 3, 5]  # client 4's batch has another shape: it runs on its own in the batched path
STEPS = 3


def _template(name: str):
    torch.manual_seed(0)
    return (ReferenceGenerator(width=0.25) if name == "G" else ReferenceDiscriminator(width=0.25)).double()


def _pair(name: str, batch_clients: bool) -> tuple[SplitNetwork, PerClientSplitNetwork]:
    """Both layouts, each client's copies perturbed differently (a mix-up between clients would show), equal."""
    template = _template(name)
    reference = PerClientSplitNetwork(template, CUTS, name, Wire(), batch_clients=batch_clients)
    stacked = SplitNetwork(template, CUTS, name, Wire(), batch_clients=batch_clients)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in [*reference.parameters(), *(b for b in reference.buffers() if b.is_floating_point())]:
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype).abs())
        for i, blocks in enumerate(reference.client_blocks):
            for j, block in blocks.items():
                for key, value in block.state_dict().items():
                    stacked.client_state(i)[(int(j), key)].copy_(value)
        stacked.server_blocks.load_state_dict(reference.server_blocks.state_dict())
    return stacked, reference


def _inputs(name: str, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(100 + step)
    labels = [torch.randint(0, 10, (n,), generator=generator) for n in SIZES]
    if name == "G":
        xs = [torch.randn(n, 100, generator=generator, dtype=torch.float64) for n in SIZES]
    else:
        xs = [torch.rand(n, 1, 28, 28, generator=generator, dtype=torch.float64) * 2 - 1 for n in SIZES]
    return xs, labels


def _reference_grads(reference: PerClientSplitNetwork, client: int) -> dict:
    return {(j, n): p.grad for j in range(reference.num_blocks) for n, p in reference.block_used_by(client, j).named_parameters()}


@pytest.mark.parametrize("batch_clients", [False, True], ids=["one-by-one", "vmap"])
@pytest.mark.parametrize("name", ["G", "D"])
def test_stacked_storage_equals_the_per_module_reference_over_several_adam_steps(name: str, batch_clients: bool) -> None:
    stacked, reference = _pair(name, batch_clients)
    optimisers = [torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999)) for net in (stacked, reference)]
    tight = {"rtol": 1e-10, "atol": 1e-12}
    for step in range(STEPS):
        xs, ys = _inputs(name, step)
        outs = [net([x.clone() for x in xs], ys) for net in (stacked, reference)]
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, **tight)
        upstream = [torch.randn_like(o) for o in outs[0]]
        for opt, out in zip(optimisers, outs):
            opt.zero_grad()
            sum((o * u).sum() for o, u in zip(out, upstream)).backward()
        for client in range(len(CUTS)):
            expected = _reference_grads(reference, client)
            for key, grad in stacked.used_gradients(client).items():
                torch.testing.assert_close(grad, expected[key], rtol=1e-9, atol=1e-11, msg=lambda m, k=key: f"{client} {k}: {m}")
        for opt in optimisers:
            opt.step()
    for client in range(len(CUTS)):  # weights and batch-norm statistics (running mean, var, batch count)
        for (j, key), value in stacked.used_tensors(client).items():
            torch.testing.assert_close(value, reference.block_used_by(client, j).state_dict()[key], **tight)
    adam_stacked, adam_reference = (opt.state for opt in optimisers)
    for j, stack in stacked.client_stacks.items():  # row r of a stacked Adam state is client r's own Adam state
        for pname, param in stack.named_parameters():
            for row, position in enumerate(stacked.local_members[int(j)]):
                own = adam_reference[reference.client_blocks[position][j].get_parameter(pname)]
                for moment in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(adam_stacked[param][moment][row], own[moment], **tight)
                assert float(adam_stacked[param]["step"]) == float(own["step"]) == STEPS
    assert dict(stacked.wire.bytes) == dict(reference.wire.bytes)  # per client, cut, direction and kind


@pytest.mark.parametrize("name", ["G", "D"])
def test_shared_views_over_two_passes_give_the_per_module_gradients_and_statistics(name: str) -> None:
    """Two passes in `shared_views` and one backward (the D step's fakes and reals): every client's gradient is
    the sum over both passes and both passes' batch-norm statistics land in the stacks, as with a module per client."""
    stacked, reference = _pair(name, batch_clients=False)
    passes = [_inputs(name, step) for step in range(2)]
    upstream = [[torch.randn(1) for _ in SIZES] for _ in passes]
    with stacked.shared_views():
        stacked_outs = [stacked(xs, ys) for xs, ys in passes]
        assert len(stacked._shared_views) == len(stacked.client_stacks)  # one set of views per stack, both passes
    assert stacked._shared_views is None
    reference_outs = [reference(xs, ys) for xs, ys in passes]
    for outs in (stacked_outs, reference_outs):
        sum((o * u).sum() for out, ups in zip(outs, upstream) for o, u in zip(out, ups)).backward()
    for client in range(len(CUTS)):
        expected = _reference_grads(reference, client)
        for key, grad in stacked.used_gradients(client).items():
            torch.testing.assert_close(grad, expected[key], rtol=1e-10, atol=1e-12)
        for (j, key), value in stacked.used_tensors(client).items():
            torch.testing.assert_close(value, reference.block_used_by(client, j).state_dict()[key], rtol=1e-10, atol=1e-12)


def test_one_optimiser_tensor_per_block_parameter_whatever_the_number_of_clients() -> None:
    few = SplitNetwork(ReferenceGenerator(width=0.25), CUTS, "G", Wire())
    many = SplitNetwork(ReferenceGenerator(width=0.25), CUTS * 10, "G", Wire())
    assert len(list(few.parameters())) == len(list(many.parameters()))
    assert sum(p.numel() for p in many.client_stacks.parameters()) == 10 * sum(p.numel() for p in few.client_stacks.parameters())


def _adam_run(make, amsgrad: bool = False) -> tuple[list[torch.Tensor], dict]:
    """Four steps of the optimiser ``make`` builds over float32 tensors of mixed sizes, one not contiguous."""
    generator = torch.Generator().manual_seed(3)
    params = [torch.randn(shape, generator=generator, requires_grad=True) for shape in [(6, 41, 3), (17,), (1,)]]
    params.append(torch.randn(9, 5, generator=generator).t().requires_grad_())
    optimiser = make(params)
    optimiser.param_groups[0]["amsgrad"] = amsgrad
    for _ in range(4):
        for param in params:
            grad = torch.randn(param.shape, generator=generator)
            param.grad = grad if param.is_contiguous() else grad.mT.contiguous().mT  # laid out like its parameter
        optimiser.step()
    return [p.detach() for p in params], optimiser.state_dict()


@pytest.mark.parametrize("amsgrad", [False, True], ids=["chunked", "stock-fallback"])
def test_chunked_adam_is_torch_adam_bit_for_bit(amsgrad: bool) -> None:
    """Slices of 7 elements (ragged tails, a tensor smaller than a slice, one not contiguous) change no bit of the
    weights or of the state; a setting the chunked step does not cover takes the stock step."""
    chunked = _adam_run(lambda ps: ChunkedAdam(ps, lr=1e-2, betas=(0.5, 0.999), chunk=7), amsgrad)
    stock = _adam_run(lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.5, 0.999), foreach=False), amsgrad)
    for a, b in zip(chunked[0], stock[0]):
        assert torch.equal(a, b)
    for key, state in stock[1]["state"].items():
        for name, value in state.items():
            assert torch.equal(chunked[1]["state"][key][name], value), name


def test_row_gradients_written_into_a_kept_buffer_equal_autograds_own() -> None:
    """RowCalls with gradient buffers: the stacked `.grad` equals plain `unbind`'s (an unused row: zeros), it
    adds to a `.grad` already set as autograd would, and the next step (grads set to None) reuses the buffer
    instead of a fresh tensor; a dtype change gets a new one."""
    torch.manual_seed(0)
    stacked = stack_block(torch.nn.Linear(4, 3), [dict(torch.nn.Linear(4, 3).named_parameters()) for _ in range(3)])
    inputs = [torch.randn(5, 4) for _ in range(3)]

    def backward(rows: RowCalls, used: list[int]) -> None:
        sum((rows(r, (inputs[r],)) ** 2).sum() for r in used).backward()

    backward(RowCalls(stacked), [0, 2])
    expected = {name: p.grad.clone() for name, p in stacked.named_parameters()}
    assert expected["weight"][1].abs().sum() == 0  # the unused row
    for p in stacked.parameters():
        p.grad = None
    buffers: dict[str, torch.Tensor] = {}
    backward(RowCalls(stacked, buffers), [0, 2])
    assert set(buffers) == {"weight", "bias"}
    for name, p in stacked.named_parameters():
        assert p.grad is buffers[name] and torch.equal(p.grad, expected[name])
    backward(RowCalls(stacked, buffers), [0, 2])  # .grad set: added to, as autograd accumulates
    for name, p in stacked.named_parameters():
        assert torch.equal(p.grad, 2 * expected[name])
    kept = {name: t.data_ptr() for name, t in buffers.items()}
    for p in stacked.parameters():
        p.grad = None  # zero_grad(set_to_none=True), as the training step does
    backward(RowCalls(stacked, buffers), [0, 1, 2])
    backward(RowCalls(stacked), [0, 1, 2])  # plain unbind on top: its gradient accumulates into the buffer
    assert {name: t.data_ptr() for name, t in buffers.items()} == kept
    stacked.double()
    inputs = [x.double() for x in inputs]
    for p in stacked.parameters():
        p.grad = None
    backward(RowCalls(stacked, buffers), [1])
    assert all(buffers[name].dtype == torch.float64 and p.grad is buffers[name] for name, p in stacked.named_parameters())
