"""Private initialisation: every client starts the blocks it holds from its own secret initial weights.

With one shared initialisation the server knows the clients' head weights before any training, and masked
aggregation hides only how far they moved since; a quarter-width one-block head inverted with its initial weights
still gives back a client's images after short training (`privacy.attacks`, measured in docs/privacy.md). Here
each client draws its copy of each of its blocks from a key of its own (in this one-process simulation derived from
the clients' secret, `masking.client_secret`), so the first aggregation averages copies the server never knew, and
under masked aggregation it never learns any later one either. The server's own blocks keep the shared
initialisation.
"""

from __future__ import annotations

import torch

from huscf_lightning.privacy.masking import key_seed
from huscf_lightning.split.network import SplitNetwork


def client_block_seed(secret: int, network: str, client: int, block: int) -> int:
    """The seed of ``client``'s initial copy of ``block`` of ``network``."""
    return key_seed(f"{secret}|init|{network}|{client}|{block}")


@torch.no_grad()
def initialise_privately(net: SplitNetwork, secret: int) -> None:
    """Give every client of ``net`` its own initial copy of every block it holds (`client_block_seed`): in the
    store, and in the stacks of the resident clients. Call before the optimisers are built."""
    keys = net.store.keys
    models = []
    for client in range(net.num_clients):
        model = dict(net.store.client_state(client))  # blocks it does not hold keep the shared values
        for block in sorted({j for j, _ in keys if net.is_local(client, j)}):
            state = net.fresh_block(block, client_block_seed(secret, net.name, client, block)).state_dict()
            model.update({(j, name): state[name].detach().clone() for j, name in keys if j == block})
        models.append(model)
    net.store.update(range(net.num_clients), torch.arange(net.num_clients), models, follow=False)
    net.set_resident(net.resident)
