"""Weighted averaging of client-stacked states against hand computations."""

import pytest
import torch

from huscf_lightning.federation.averaging import AveragingError, average_stacked, average_states
from huscf_lightning.federation.weights import fedavg_aggregation, kld_clustered_aggregation

# Three clients; group 0 = clients 0 and 1 (weights 1/4, 3/4), group 1 = client 2 alone.
WEIGHTS = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_float_tensor_equals_hand_computation():
    stacked = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, -4.0]], dtype=torch.float64)
    averaged = average_stacked(stacked, WEIGHTS)
    # Row 0: .25 * [1, 2] + .75 * [3, 6] = [2.5, 5]; row 1: client 2's copy unchanged.
    assert averaged.dtype == torch.float64
    assert averaged.tolist() == [[2.5, 5.0], [10.0, -4.0]]


def test_integer_counter_takes_the_max_over_weighed_clients():
    counters = torch.tensor([5, 9, 70])
    averaged = average_stacked(counters, WEIGHTS)
    # Row 0 weighs clients 0 and 1 only: max(5, 9) = 9 (client 2's 70 has weight 0); row 1: 70.
    assert averaged.dtype == torch.long
    assert averaged.tolist() == [9, 70]


def test_states_keep_names_shapes_and_dtypes():
    conv = torch.arange(3 * 2 * 1 * 2 * 2, dtype=torch.float32).reshape(3, 2, 1, 2, 2)
    state = {
        "0.weight": conv,
        "1.running_mean": torch.tensor([[0.0, 4.0], [8.0, 0.0], [1.0, 1.0]]),
        "1.num_batches_tracked": torch.tensor([3, 1, 2]),
    }
    averaged = average_states(state, WEIGHTS)
    assert list(averaged) == list(state)
    assert averaged["0.weight"].shape == (2, 2, 1, 2, 2) and averaged["0.weight"].dtype == torch.float32
    torch.testing.assert_close(averaged["0.weight"][0], 0.25 * conv[0] + 0.75 * conv[1])
    torch.testing.assert_close(averaged["0.weight"][1], conv[2])
    # running_mean row 0: .25 * [0, 4] + .75 * [8, 0] = [6, 1].
    assert averaged["1.running_mean"].tolist() == [[6.0, 1.0], [1.0, 1.0]]
    assert averaged["1.num_batches_tracked"].tolist() == [3, 2]


def test_fedavg_matches_a_per_client_sum():
    generator = torch.Generator().manual_seed(0)
    stacked = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64)
    sizes = torch.tensor([10, 20, 30, 25, 15])
    server = average_stacked(stacked, fedavg_aggregation(sizes).server_matrix)
    expected = sum(sizes[k].item() / 100 * stacked[k] for k in range(5))
    torch.testing.assert_close(server[0], expected, rtol=0, atol=1e-12)


def test_identical_copies_average_to_themselves_in_float32():
    copy = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    stacked = copy.expand(3, 4, 6)
    weights = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(average_stacked(stacked, weights)[0], copy)


def test_bad_input_is_a_clear_error():
    stacked = torch.ones(3, 2)
    with pytest.raises(AveragingError, match="leading client axis of length 3"):
        average_stacked(torch.ones(4, 2), WEIGHTS)
    with pytest.raises(AveragingError, match=r"\(G, K\)"):
        average_stacked(stacked, torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(AveragingError, match=r"\(G, K\)"):
        average_stacked(stacked, torch.tensor([[1, 0, 0]]))
    with pytest.raises(AveragingError, match="sum to 1"):
        average_stacked(stacked, torch.tensor([[0.5, 0.2, 0.0]]))
    with pytest.raises(AveragingError, match="non-negative"):
        average_stacked(stacked, torch.tensor([[1.5, -0.5, 0.0]]))
    with pytest.raises(AveragingError, match="no meaningful average"):
        average_stacked(torch.tensor([True, False, True]), WEIGHTS)
    with pytest.raises(AveragingError, match="'b'"):
        average_states({"a": stacked, "b": torch.ones(2, 2)}, WEIGHTS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_result_on_the_device():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(6, 4, 3, 3, generator=generator)
    sizes = torch.tensor([5, 6, 7, 8, 9, 10])
    clusters = torch.tensor([0, 1, 0, 1, 1, 0])
    state = {"w": torch.randn(6, 3, 2, generator=generator), "n": torch.tensor([1, 4, 2, 8, 5, 7])}
    on_cpu = kld_clustered_aggregation(sizes, features, clusters)
    on_gpu = kld_clustered_aggregation(sizes.cuda(), features.cuda(), clusters.cuda())
    assert on_gpu.client_matrix.is_cuda
    torch.testing.assert_close(on_gpu.client_matrix.cpu(), on_cpu.client_matrix)
    averaged = average_states({name: t.cuda() for name, t in state.items()}, on_gpu.client_matrix)
    expected = average_states(state, on_cpu.client_matrix)
    for name in state:
        assert averaged[name].is_cuda
        torch.testing.assert_close(averaged[name].cpu(), expected[name])
