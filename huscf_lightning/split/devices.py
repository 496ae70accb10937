"""Device profiles: the server and the client device types, and which client gets which.

A profile file is YAML with a ``server`` and a ``devices`` mapping (see
``configs/profiles/paper.yaml``). Units are in the key names:

- server: ``rate_bytes_per_s`` (what it sends per second to one client) and its throughput as
  either ``flops_per_s`` or a clock (``cpu_ghz`` or ``cpu_mhz``) times ``flops_per_cycle``;
- each device: ``cpu_mhz``, ``flops_per_cycle`` and ``rate_bytes_per_s`` (its upload rate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import yaml

from huscf_lightning.errors import HuSCFError

PACKAGED_PROFILES = ("paper",)
DEVICE_KEYS = ("cpu_mhz", "flops_per_cycle", "rate_bytes_per_s")
SERVER_KEYS = ("cpu_ghz", "cpu_mhz", "flops_per_cycle", "flops_per_s", "rate_bytes_per_s")


class ProfileError(HuSCFError, ValueError):
    """A profile file or assignment that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class DeviceProfile:
    """One client device type: clock, FLOPs per cycle and upload rate."""

    name: str
    cpu_mhz: float
    flops_per_cycle: float
    rate_bytes_per_s: float

    @property
    def flops_per_s(self) -> float:
        return self.cpu_mhz * 1e6 * self.flops_per_cycle

    def to_dict(self) -> dict:
        return {
            "cpu_mhz": self.cpu_mhz,
            "flops_per_cycle": self.flops_per_cycle,
            "rate_bytes_per_s": self.rate_bytes_per_s,
        }


@dataclass(frozen=True)
class ServerProfile:
    """The server: throughput and the rate at which it sends to each client."""

    flops_per_s: float
    rate_bytes_per_s: float

    def to_dict(self) -> dict:
        return {"flops_per_s": self.flops_per_s, "rate_bytes_per_s": self.rate_bytes_per_s}


@dataclass(frozen=True)
class ProfileSet:
    """A server plus the named client device types, in file order."""

    server: ServerProfile
    devices: tuple[DeviceProfile, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    def device(self, name: str) -> DeviceProfile:
        for d in self.devices:
            if d.name == name:
                return d
        raise ProfileError(f"Unknown device profile {name!r}; the profiles are {self.names}.")

    def to_dict(self) -> dict:
        return {"server": self.server.to_dict(), "devices": {d.name: d.to_dict() for d in self.devices}}


def _positive(value: object, where: str) -> float:
    """A positive finite number; numeric strings such as ``50e6`` (which YAML reads as text) count."""
    if isinstance(value, bool):
        number = math.nan
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value))
        except ValueError:
            number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ProfileError(
            f"{where} is {value!r}; it must be a positive number (rates, clocks and FLOPs per cycle "
            f"of zero or below would make a transfer or a computation take forever)."
        )
    return number


def _check_keys(entry: object, allowed: Sequence[str], where: str) -> Mapping:
    if not isinstance(entry, Mapping):
        raise ProfileError(f"{where} must be a mapping of {list(allowed)}; got {entry!r}.")
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ProfileError(f"{where} has unknown key(s) {unknown}; the allowed keys are {list(allowed)}.")
    return entry


def _parse_device(name: str, entry: object) -> DeviceProfile:
    where = f"device {name!r}"
    entry = _check_keys(entry, DEVICE_KEYS, where)
    missing = [k for k in DEVICE_KEYS if k not in entry]
    if missing:
        raise ProfileError(f"{where} lacks {missing}; a device needs {list(DEVICE_KEYS)}.")
    return DeviceProfile(
        name=str(name),
        cpu_mhz=_positive(entry["cpu_mhz"], f"{where} cpu_mhz"),
        flops_per_cycle=_positive(entry["flops_per_cycle"], f"{where} flops_per_cycle"),
        rate_bytes_per_s=_positive(entry["rate_bytes_per_s"], f"{where} rate_bytes_per_s"),
    )


def _server_flops_per_s(entry: Mapping) -> float:
    """Throughput from ``flops_per_s`` alone, or from one clock times ``flops_per_cycle``."""
    clocks = [k for k in ("cpu_ghz", "cpu_mhz") if k in entry]
    if "flops_per_s" in entry and not clocks and "flops_per_cycle" not in entry:
        return _positive(entry["flops_per_s"], "server flops_per_s")
    if "flops_per_s" not in entry and len(clocks) == 1 and "flops_per_cycle" in entry:
        scale = 1e9 if clocks[0] == "cpu_ghz" else 1e6
        clock_hz = _positive(entry[clocks[0]], f"server {clocks[0]}") * scale
        return clock_hz * _positive(entry["flops_per_cycle"], "server flops_per_cycle")
    raise ProfileError(
        "server throughput must be given once: either flops_per_s, or one clock (cpu_ghz or "
        f"cpu_mhz) together with flops_per_cycle; got keys {sorted(entry)}."
    )


def _parse_server(entry: object) -> ServerProfile:
    entry = _check_keys(entry, SERVER_KEYS, "server")
    if "rate_bytes_per_s" not in entry:
        raise ProfileError("server lacks rate_bytes_per_s (bytes per second it sends to a client).")
    return ServerProfile(_server_flops_per_s(entry), _positive(entry["rate_bytes_per_s"], "server rate_bytes_per_s"))


def parse_profiles(data: object, source: str = "profiles") -> ProfileSet:
    """A `ProfileSet` from the parsed YAML mapping; every key and value checked."""
    data = _check_keys(data, ("server", "devices"), source)
    if "server" not in data or "devices" not in data:
        raise ProfileError(f"{source} needs both 'server' and 'devices' sections.")
    devices = data["devices"]
    if not isinstance(devices, Mapping) or not devices:
        raise ProfileError(f"{source}: 'devices' must be a non-empty mapping of name -> device profile.")
    return ProfileSet(_parse_server(data["server"]), tuple(_parse_device(n, e) for n, e in devices.items()))


def load_profiles(path_or_name: str | Path) -> ProfileSet:
    """Profiles from a YAML file, or a packaged set by name (``"paper"``)."""
    if str(path_or_name) in PACKAGED_PROFILES:
        path = files("huscf_lightning.configs") / "profiles" / f"{path_or_name}.yaml"
    else:
        path = Path(path_or_name)
    if not path.is_file():
        raise ProfileError(
            f"No profile file at {str(path)!r}. Give a YAML file path or one of the packaged sets "
            f"{list(PACKAGED_PROFILES)}."
        )
    return parse_profiles(_read_yaml_mapping(path), str(path))


def _read_yaml_mapping(path: Path) -> Mapping:
    """The top-level mapping of a profile file; unreadable YAML, an empty file, a file that is not
    UTF-8 text or whose top level is not a mapping is a `ProfileError` naming the file and the fix."""
    example = "a mapping with 'server' and 'devices' sections, as in the packaged set configs/profiles/paper.yaml"
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ProfileError(
            f"The profile file {str(path)!r} is not UTF-8 text (byte {err.start} cannot be decoded); "
            f"give a YAML text file: {example}."
        ) from None
    except yaml.YAMLError as err:
        raise ProfileError(
            f"The profile file {str(path)!r} is not valid YAML: {_yaml_problem(err)}. Fix the YAML there; "
            f"the file must be {example}."
        ) from None
    if data is None:
        raise ProfileError(f"The profile file {str(path)!r} is empty; write {example}.")
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"The profile file {str(path)!r} holds a {type(data).__name__}, not a mapping; write {example}."
        )
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What PyYAML found wrong and where (1-based line and column), in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(err, "position", None)
    return f"{problem} at character {position + 1}" if position is not None else str(problem)


def assign_profiles(
    num_clients: int,
    devices: ProfileSet,
    seed: int,
    explicit: Sequence[str] | None = None,
) -> list[str]:
    """Device name per client: ``explicit`` as given, else K // D of each type in file order
    followed by a seeded random remainder (distinct types), as the reference does."""
    if num_clients < 1:
        raise ProfileError(f"num_clients must be at least 1; got {num_clients}.")
    names = devices.names
    if explicit is not None:
        if len(explicit) != num_clients:
            raise ProfileError(
                f"The explicit profile list has {len(explicit)} entries but there are {num_clients} "
                f"clients; give exactly one device name per client."
            )
        unknown = sorted({n for n in explicit if n not in names})
        if unknown:
            raise ProfileError(f"Unknown device profile(s) {unknown} in the explicit list; known: {names}.")
        return list(explicit)
    per_type, remainder = divmod(num_clients, len(names))
    rng = np.random.default_rng(seed)
    extra = rng.choice(len(names), size=remainder, replace=False)
    return [n for n in names for _ in range(per_type)] + [names[i] for i in extra]
