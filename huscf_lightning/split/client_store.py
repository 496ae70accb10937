"""Where a client's state waits between the rounds it takes part in: host memory, one copy per cluster model.

After an aggregation every client of a group holds the same weights (its group's average), so a
client does not need a copy of its own: it points at a model *slot*, and a slot is shared by every
client that received that model. What persists per client is one integer (8 bytes); what persists
per slot is one copy of the blocks any client holds itself. A round's participants get one new slot
per group. A client that did not take part keeps its cluster, tracked by membership: if clients it
shared a slot with took part, it follows the group most of them joined (it receives its cluster's
new model); otherwise it keeps the model it has. Slots nobody points at are dropped.

When a round aggregates nothing (local training), every participant gets a slot of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError

StateKey = tuple[int, str]  # (block index, tensor name inside the block)


class ClientStoreError(HuSCFError, ValueError):
    """A store update or a saved store that does not fit this network; the message names the fix."""


class ClientStore:
    """Per client a slot index; per slot a model (``StateKey`` -> tensor, on the CPU)."""

    def __init__(self, initial: Mapping[StateKey, Tensor], num_clients: int) -> None:
        self.keys: list[StateKey] = list(initial)
        self.slots: dict[int, dict[StateKey, Tensor]] = {0: dict(initial)}
        self.slot_of = torch.zeros(num_clients, dtype=torch.long)
        self._next = 1

    @property
    def num_clients(self) -> int:
        return self.slot_of.numel()

    def client_state(self, client: int) -> dict[StateKey, Tensor]:
        """The model ``client`` holds (shared with the other clients of its slot: do not write into it)."""
        return self.slots[int(self.slot_of[client])]

    def update(
        self, clients: Sequence[int], groups: Tensor, models: Sequence[Mapping[StateKey, Tensor]], follow: bool = True
    ) -> None:
        """``clients`` took part: client ``clients[r]`` now holds ``models[groups[r]]``. With ``follow`` every other
        client follows the group most of its slot's participants joined (the smallest group on a tie), or keeps its
        slot; without (a round that aggregated nothing) every other client keeps its slot."""
        participants = torch.as_tensor(list(clients), dtype=torch.long)
        groups = groups.to(torch.long)
        if groups.shape != participants.shape or (groups.numel() and not 0 <= int(groups.min()) <= int(groups.max()) < len(models)):
            raise ClientStoreError(
                f"update needs one group per participant, each in 0..{len(models) - 1}; got groups {groups.tolist()} "
                f"for clients {participants.tolist()}."
            )
        ids = torch.arange(self._next, self._next + len(models))
        self._next += len(models)
        for slot, model in zip(ids.tolist(), models):
            self.slots[slot] = {key: model[key] for key in self.keys}
        before = self.slot_of.clone()
        took_part = torch.zeros(self.num_clients, dtype=torch.bool)
        took_part[participants] = True
        previous = before[participants]
        for slot in previous.unique().tolist() if follow else []:
            successor = int(torch.bincount(groups[previous == slot], minlength=len(models)).argmax())
            self.slot_of[(before == slot) & ~took_part] = ids[successor]
        self.slot_of[participants] = ids[groups]
        live = set(self.slot_of.unique().tolist())
        for slot in [s for s in self.slots if s not in live]:
            del self.slots[slot]

    def nbytes(self) -> int:
        """Bytes the store holds: the slots' tensors and the per-client slot indices."""
        held = sum(t.numel() * t.element_size() for model in self.slots.values() for t in model.values())
        return held + self.slot_of.numel() * self.slot_of.element_size()

    def state_dict(self) -> dict:
        """The slots and every client's slot, for a checkpoint (tensors, lists and ints only)."""
        return {
            "keys": [[j, name] for j, name in self.keys],
            "slot_of": self.slot_of.clone(),
            "slots": {str(slot): [model[key] for key in self.keys] for slot, model in self.slots.items()},
            "next": self._next,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore `state_dict` output, after checking it was written for the same blocks and clients."""
        keys = [(int(j), str(name)) for j, name in state["keys"]]
        if keys != self.keys or state["slot_of"].numel() != self.num_clients:
            raise ClientStoreError(
                f"The checkpoint's client store holds {len(keys)} tensors for {state['slot_of'].numel()} clients, this "
                f"network {len(self.keys)} for {self.num_clients}: resume with the same networks, plan and data."
            )
        self.slot_of = state["slot_of"].clone().to(torch.long)
        self.slots = {int(slot): dict(zip(self.keys, tensors)) for slot, tensors in state["slots"].items()}
        self._next = int(state["next"])
