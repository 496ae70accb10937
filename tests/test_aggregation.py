"""Aggregation on the stacked storage over heterogeneous cuts equals a hand computation (parameters and BN buffers)."""

from __future__ import annotations

import torch

from huscf_lightning.federation.states import aggregate_network
from huscf_lightning.federation.weights import AggregationWeights, fedavg_aggregation
from huscf_lightning.nets import ReferenceGenerator
from huscf_lightning.split import SplitNetwork
from huscf_lightning.split.wire import Wire

CUTS = [(1, 1), (2, 1), (1, 2)]  # block 1 is local for client 1 only; block 3 local for client 2 only


def _distinct_network() -> SplitNetwork:
    net = SplitNetwork(ReferenceGenerator(), CUTS, "G", Wire())
    with torch.no_grad():
        for value, tensor in enumerate(list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]):
            tensor.copy_(torch.randn_like(tensor) + value)
        for j, stack in net.client_stacks.items():
            for name, counter in stack.named_buffers():
                if name.endswith("num_batches_tracked"):  # row r is client local_members[j][r]'s counter
                    counter.copy_(torch.tensor([10 * (i + 1) for i in net.local_members[int(j)]]))
        for module in net.server_blocks.modules():
            if hasattr(module, "num_batches_tracked"):
                module.num_batches_tracked.fill_(7)
    return net


def _used(net: SplitNetwork, client: int, block: int, name: str) -> torch.Tensor:
    return net.used_tensors(client)[(block, name)].detach().clone()


def test_fedavg_over_heterogeneous_cuts_equals_hand_computation() -> None:
    net = _distinct_network()
    sizes = torch.tensor([100.0, 300.0, 600.0])
    w = sizes / sizes.sum()
    names = ["0.weight", "1.weight", "1.running_mean", "1.running_var", "0.bias"]
    before = {(i, j, n): _used(net, i, j, n) for i in range(3) for j in (1, 3) for n in names}
    counters = {(i, j): _used(net, i, j, "1.num_batches_tracked") for i in range(3) for j in (1, 3)}
    aggregate_network(net, fedavg_aggregation(sizes))
    for j in (1, 3):
        for n in names:
            expected = w[0] * before[(0, j, n)] + w[1] * before[(1, j, n)] + w[2] * before[(2, j, n)]
            for i in range(3):  # every client's copy (own or the server's) now holds the average
                torch.testing.assert_close(_used(net, i, j, n), expected.to(torch.float32))
            torch.testing.assert_close(net.server_blocks[str(j)].state_dict()[n], expected.to(torch.float32))
        # integer counters: the largest count among the clients, not a float average
        top = max(int(counters[(i, j)]) for i in range(3))
        assert all(int(_used(net, i, j, "1.num_batches_tracked")) == top for i in range(3))
        assert net.server_blocks[str(j)].state_dict()["1.num_batches_tracked"].dtype == torch.int64


def test_clustered_weights_keep_groups_apart_and_server_takes_global_average() -> None:
    net = _distinct_network()
    groups = torch.tensor([0, 1, 0])
    client_matrix = torch.tensor([[0.25, 0.0, 0.75], [0.0, 1.0, 0.0]], dtype=torch.float64)
    server_matrix = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    weights = AggregationWeights(groups, client_matrix, server_matrix)
    n, n0 = "0.weight", "linear.weight"
    b1 = {i: _used(net, i, 1, n) for i in range(3)}  # block 1: local for client 1, server for 0 and 2
    b0 = {i: _used(net, i, 0, n0) for i in range(3)}  # block 0: local for everyone
    # block 3: local for client 2 only, so its cluster-mate client 0 uses the server's copy
    b3 = {(i, k): _used(net, i, 3, k) for i in range(3) for k in (n, "1.running_mean")}
    aggregate_network(net, weights)
    # block 0 (local for all): clients 0 and 2 share their group's average, client 1 is alone
    torch.testing.assert_close(_used(net, 0, 0, n0), 0.25 * b0[0] + 0.75 * b0[2])
    torch.testing.assert_close(_used(net, 2, 0, n0), 0.25 * b0[0] + 0.75 * b0[2])
    torch.testing.assert_close(_used(net, 1, 0, n0), b0[1])
    # block 1: client 1 (its own copy, alone in its group) keeps its copy; the server loads the global average
    torch.testing.assert_close(_used(net, 1, 1, n), b1[1])
    torch.testing.assert_close(net.server_blocks["1"].state_dict()[n], 0.2 * b1[0] + 0.3 * b1[1] + 0.5 * b1[2])
    # block 3, parameters and BN buffers: client 2's own copy takes its cluster's average, which
    # includes the server copy client 0 used; the server takes the global average incl. client 2's copy
    for k in (n, "1.running_mean"):
        torch.testing.assert_close(_used(net, 2, 3, k), 0.25 * b3[(0, k)] + 0.75 * b3[(2, k)])
        torch.testing.assert_close(
            net.server_blocks["3"].state_dict()[k], 0.2 * b3[(0, k)] + 0.3 * b3[(1, k)] + 0.5 * b3[(2, k)]
        )


def test_stacked_view_lines_up_blocks_wherever_they_live() -> None:
    net = _distinct_network()
    stacked = net.stacked_states()
    assert stacked[(1, "0.weight")].shape[0] == 3
    torch.testing.assert_close(stacked[(1, "0.weight")][0], net.server_blocks["1"].state_dict()["0.weight"])
    torch.testing.assert_close(stacked[(1, "0.weight")][1], net.client_block(1, 1).state_dict()["0.weight"])
    assert set(stacked) == {(j, k) for j, b in enumerate(ReferenceGenerator().blocks) for k in b.state_dict()}
    # a block every client holds is its stack as it is: no copy
    assert stacked[(0, "linear.weight")].data_ptr() == net.client_stacks["0"].get_parameter("linear.weight").data_ptr()
