"""Block profiler (FLOPs against analytic counts) and device profiles (loading, errors, assignment)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from huscf_lightning.nets import BlockNetwork, LabelledBlock
from huscf_lightning.split.devices import ProfileError, assign_profiles, load_profiles
from huscf_lightning.split.profile import BlockProfileError, profile_network


class _EmbedThenConv(LabelledBlock):
    """Block 0: a label plane appended as a channel, then Conv 2->4 k3 p1 (8x8)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 64)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        plane = self.embed(labels).view(-1, 1, 8, 8)
        return torch.relu(self.norm(self.conv(torch.cat([x, plane], dim=1))))


def _small_network() -> BlockNetwork:
    return BlockNetwork(
        [
            _EmbedThenConv(),
            nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 16), nn.ReLU()),
            nn.Sequential(nn.Linear(16, 1), nn.Sigmoid()),
        ]
    )


def test_flops_and_bytes_equal_the_analytic_counts() -> None:
    batch = 5
    net = _small_network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    profile = profile_network(net, torch.randn(batch, 1, 8, 8), torch.randint(0, 3, (batch,)))
    conv0 = 2 * batch * 4 * 8 * 8 * (2 * 3 * 3)
    conv1 = 2 * batch * 6 * 8 * 8 * (4 * 3 * 3)
    linear2 = 2 * batch * 384 * 16
    linear3 = 2 * batch * 16 * 1
    assert profile.forward_flops == [conv0, conv1, linear2, linear3]
    # Backward: weight gradient everywhere; input gradient too, since every block's input needs one
    # (block 0's via the label embedding). Each costs as much as the forward product.
    assert profile.backward_flops == [2 * conv0, 2 * conv1, 2 * linear2, 2 * linear3]
    assert profile.output_bytes == [4 * batch * 4 * 64, 4 * batch * 6 * 64, 4 * batch * 16, 4 * batch]
    assert profile.num_blocks == 4 and profile.batch_size == batch
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "profiling must not touch the caller's network"
    assert all(p.grad is None for p in net.parameters())


def test_profile_is_cached_per_architecture_and_shape() -> None:
    labels = torch.zeros(2, dtype=torch.long)
    first = profile_network(_small_network(), torch.randn(2, 1, 8, 8), labels)
    again = profile_network(_small_network(), torch.randn(2, 1, 8, 8), labels)
    other_batch = profile_network(_small_network(), torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    assert again is first
    assert other_batch.batch_size == 3 and other_batch is not first


def test_network_with_fewer_than_three_blocks_is_rejected() -> None:
    class TwoBlocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    with pytest.raises(BlockProfileError, match="at least 3"):
        profile_network(TwoBlocks(), torch.randn(2, 2), torch.zeros(2, dtype=torch.long))


def test_paper_profiles_load_with_their_units() -> None:
    profiles = load_profiles("paper")
    assert profiles.names == [f"d{k}" for k in range(1, 8)]
    assert profiles.server.flops_per_s == pytest.approx(42e9 * 16)
    assert profiles.server.rate_bytes_per_s == pytest.approx(1e9)
    d1 = profiles.device("d1")
    assert (d1.cpu_mhz, d1.flops_per_cycle, d1.rate_bytes_per_s) == (480.0, 1.0, 50e6)
    assert profiles.device("d7").flops_per_s == pytest.approx(12000e6 * 10)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return path


GOOD_DEVICE = "{cpu_mhz: 100, flops_per_cycle: 2, rate_bytes_per_s: 1e6}"


def test_user_profiles_accept_flops_per_s_and_numeric_strings(tmp_path: Path) -> None:
    profiles = load_profiles(_write(tmp_path, f"server: {{flops_per_s: 5e9, rate_bytes_per_s: 2e8}}\ndevices: {{x: {GOOD_DEVICE}}}\n"))
    assert profiles.server.flops_per_s == 5e9
    assert profiles.device("x").flops_per_s == 100e6 * 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"server: {{flops_per_s: 1e9, rate_bytes_per_s: 1e9, gpu: 1}}\ndevices: {{x: {GOOD_DEVICE}}}", "unknown key"),
        ("server: {flops_per_s: 1e9, rate_bytes_per_s: 1e9}\ndevices: {x: {cpu_mhz: 1, flops_per_cycle: 1, rate_bytes_per_s: 1, ram: 2}}", "unknown key"),
        ("server: {flops_per_s: 1e9, rate_bytes_per_s: 1e9}\ndevices: {x: {cpu_mhz: 100, flops_per_cycle: 1, rate_bytes_per_s: 0}}", "positive"),
        ("server: {flops_per_s: 1e9, rate_bytes_per_s: -5}\n" f"devices: {{x: {GOOD_DEVICE}}}", "positive"),
        ("server: {cpu_ghz: 1, flops_per_s: 1e9, rate_bytes_per_s: 1e9}\n" f"devices: {{x: {GOOD_DEVICE}}}", "given once"),
        ("server: {flops_per_s: 1e9, rate_bytes_per_s: 1e9}\ndevices: {x: {cpu_mhz: 100, flops_per_cycle: 1}}", "lacks"),
    ],
)
def test_bad_profile_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profiles(_write(tmp_path, text))


def test_missing_profile_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="No profile file"):
        load_profiles(tmp_path / "nope.yaml")


def test_assignment_is_even_with_a_seeded_remainder() -> None:
    profiles = load_profiles("paper")
    names = assign_profiles(80, profiles, seed=3)
    counts = {n: names.count(n) for n in profiles.names}
    assert sorted(counts.values()) == [11] * 4 + [12] * 3
    assert names[:77] == [n for n in profiles.names for _ in range(11)]
    assert names == assign_profiles(80, profiles, seed=3)
    remainders = {tuple(assign_profiles(80, profiles, seed=s)[77:]) for s in range(10)}
    assert len(remainders) > 1


def test_explicit_assignment_must_cover_every_client_with_known_names() -> None:
    profiles = load_profiles("paper")
    assert assign_profiles(3, profiles, 0, ["d3", "d1", "d3"]) == ["d3", "d1", "d3"]
    with pytest.raises(ProfileError, match="2 entries but there are 3 clients"):
        assign_profiles(3, profiles, 0, ["d1", "d2"])
    with pytest.raises(ProfileError, match="Unknown device profile"):
        assign_profiles(2, profiles, 0, ["d1", "laptop"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"server: {cpu_ghz: 42\ndevices:\n  d1: [1, 2\n", "is not valid YAML: .* at line 2, column 8"),
        (b"", "is empty"),
        (b"- server\n- devices\n", "holds a list, not a mapping"),
        (b"\xff\xfe\x00\x01\x89PNG", "is not UTF-8 text"),
        (b"server\x00: 1\n", "is not valid YAML: special characters"),
    ],
    ids=["syntax", "empty", "list", "binary", "nul"],
)
def test_unreadable_profile_files_are_one_paragraph_errors_from_the_cuts_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    from huscf_lightning.__main__ import main

    path = tmp_path / "profiles.yaml"
    path.write_bytes(content)
    assert main(["cuts", "--profiles", str(path), "--clients", "3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "<unicode string>" not in err
    assert err.startswith(f"error: The profile file {str(path)!r} ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert "'server' and 'devices'" in err  # the fix: what the file must hold
