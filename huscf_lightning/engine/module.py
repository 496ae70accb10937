"""HuSCFGAN: the LightningModule that trains one conditional GAN across all clients in lock-step.

One training step is one iteration of METHOD.md for every client at once: G forward (client
head -> server -> client tail), a D step on detached fakes and on reals, then a G step through D.
Losses are summed over clients; one Adam covers all D parts and one all G parts (Adam is
per-parameter, so this equals one Adam per part; the clients' copies are stacked tensors, so it steps
one tensor per block parameter whatever the number of clients). With ``federation.participation``
below 1 only the round's participants are resident in the networks and train; the others wait in
the networks' client stores. At the end of a round's last epoch the module
opens a `RoundState` (with the clustering features it kept during the round) and runs the round
callbacks over it in stage order (`callbacks.round.run_round_end`); what a round end does with the
clients' copies is the federation strategy's (`federation.strategy`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn import functional as F

from huscf_lightning.engine import sharded_checkpoint as sharded_checkpoint
from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.errors import ConfigError
from huscf_lightning.engine.distributed import check_strategy, client_shard, gather_objects, sum_gradients
from huscf_lightning.split.wire import DOWN, UP, Wire
from huscf_lightning.federation.participation import clients_per_round, draw_participants
from huscf_lightning.federation.strategy import FederationStrategy, build_strategy
from huscf_lightning.nets import BlockNetwork, ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.split.chunked_adam import ChunkedAdam
from huscf_lightning.split.network import ServerActivation, SplitNetwork
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.source import build_plan
from huscf_lightning.engine.tracking import mlflow_logger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Templates:
    """The unsplit G and D the split networks are copied from, held outside the module's parameters (so
    they add nothing to the state dict, to ``.to()``, or to the parameters a distributed strategy syncs)."""

    generator: BlockNetwork
    discriminator: BlockNetwork


class HuSCFGAN(pl.LightningModule):
    """Heterogeneous U-shaped split + clustered federated training of a conditional GAN.

    The clients (their domains and dataset sizes) come from the datamodule at ``setup``, or from
    `configure_clients` when used without one. A run is ``rounds * local_epochs`` epochs: set
    ``Trainer(max_epochs=model.max_epochs)`` (the CLI does it for you). ``batch_clients``: compute
    the clients that run the same block on their own copies in one ``torch.func.vmap`` call (True),
    one by one (False), or by device (None: batched on a GPU, where an 80-client step takes half the
    time, one by one on a CPU, where batching is slower); False also suits blocks vmap cannot run.
    """

    def __init__(
        self,
        generator: BlockNetwork | None = None,
        discriminator: BlockNetwork | None = None,
        plan: PlanSpec | None = None,
        federation: FederationSpec | None = None,
        evaluation: EvaluationSpec | None = None,
        rounds: int = 3,
        local_epochs: int = 5,
        z_dim: int = 100,
        num_classes: int = 10,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        seed: int = 0,
        batch_clients: bool | None = None,
    ) -> None:
        super().__init__()
        if min(rounds, local_epochs, z_dim, num_classes) < 1:
            raise ConfigError(
                f"rounds, local_epochs, z_dim and num_classes must be >= 1; got rounds={rounds}, "
                f"local_epochs={local_epochs}, z_dim={z_dim}, num_classes={num_classes}."
            )
        # `rounds` is the training length, not the model: leaving it out of the hyperparameters lets
        # `fit --ckpt_path ... --model.rounds=N` extend a run (LightningCLI restores saved hparams over the CLI).
        # `batch_clients` changes how clients are computed, not what: it can differ on resume.
        # The config is logged to MLflow once, by the CLI (logger=False); the checkpoint keeps these for resuming.
        self.save_hyperparameters(ignore=["generator", "discriminator", "rounds", "batch_clients"], logger=False)
        self.automatic_optimization = False
        self._templates = _Templates(
            generator if generator is not None else ReferenceGenerator(z_dim, num_classes),
            discriminator if discriminator is not None else ReferenceDiscriminator(num_classes),
        )
        self.plan_spec = plan or PlanSpec()
        self.federation = federation or FederationSpec()
        self.evaluation = evaluation or EvaluationSpec()
        self.plan_spec.validate()
        self.federation.validate()
        self.evaluation.validate()
        self.strategy: FederationStrategy = build_strategy(self.federation, seed)
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.seed = seed
        self.batch_clients = batch_clients
        self.wire = Wire()
        self.plan: SplitPlan | None = None
        self.plan_report: dict | None = None
        self.client_domains: list[str] = []
        self.client_sizes: list[int] = []
        self.G: SplitNetwork | None = None
        self.D: SplitNetwork | None = None
        self._noise = torch.Generator()
        self._round_members: tuple[int, ...] = ()
        self._feature_block: int | None = None
        self._round_activation: ServerActivation | None = None
        self._loss_weights: dict[tuple, Tensor] = {}
        self.resumed_from_run: str | None = None
        self._g_params: list[Tensor] | None = None

    # ----------------------------------------------------------------- clients and networks
    @property
    def generator_template(self) -> BlockNetwork:
        """The unsplit generator every client's copies come from."""
        return self._templates.generator

    @property
    def discriminator_template(self) -> BlockNetwork:
        """The unsplit discriminator every client's copies come from."""
        return self._templates.discriminator

    @property
    def max_epochs(self) -> int:
        return self.rounds * self.local_epochs

    @property
    def num_clients(self) -> int:
        return len(self.client_domains)

    @property
    def domain_names(self) -> list[str]:
        return list(dict.fromkeys(self.client_domains))

    def configure_clients(
        self,
        client_domains: Sequence[str],
        client_sizes: Sequence[int],
        plan: SplitPlan | None = None,
        batch_size: int = 64,
        progress_bar: bool = True,
    ) -> None:
        """Build the plan and the split networks for these clients (idempotent for the same clients), and
        check that the federation strategy can run on them; every error here comes before training.

        ``batch_size`` is the per-client training batch: the latency model profiles the blocks at it.
        ``progress_bar``: a GA plan shows its progress per generation.
        """
        if self.G is not None:
            if list(client_domains) != self.client_domains or list(client_sizes) != self.client_sizes:
                raise ConfigError(
                    f"This model was built for {self.num_clients} clients {self.client_domains} with sizes "
                    f"{self.client_sizes}, but the data now has {len(client_domains)} clients {list(client_domains)} "
                    f"with sizes {list(client_sizes)}. Use the same data section as the run that made the checkpoint."
                )
            return
        self.strategy.check_clients(len(client_domains))
        first = draw_participants(len(client_domains), self.federation.participation, self.seed, 1)
        if len(first) < len(client_domains):
            if not self.strategy.partial_participation:
                raise ConfigError(
                    f"federation.mode={self.federation.mode} needs every client in every round, but "
                    f"federation.participation={self.federation.participation} lets {len(first)} of "
                    f"{len(client_domains)} take part; use participation 1.0 with it."
                )
            self.strategy.check_clients(len(first))
        self._check_templates()
        if plan is None:
            plan, self.plan_report = build_plan(
                self.plan_spec,
                len(client_domains),
                self.generator_template,
                self.discriminator_template,
                self.seed,
                shared_d_block=self.strategy.needs_features,
                z_dim=self.z_dim,
                num_classes=self.num_classes,
                batch_size=batch_size,
                progress_bar=progress_bar,
                placement=self.strategy.placement,
            )
        G = SplitNetwork(self.generator_template, plan.head_tails("G"), "G", self.wire, self.batch_clients, first)
        D = SplitNetwork(self.discriminator_template, plan.head_tails("D"), "D", self.wire, self.batch_clients, first)
        feature_block = D.common_server_block() if self.strategy.needs_features else None
        if self.strategy.needs_features and feature_block is None:
            raise ConfigError(
                f"federation.mode={self.federation.mode} needs a discriminator block that every client runs on the "
                f"server, but the plan's D cuts {plan.head_tails('D')} share none. Use federation.mode=fedavg, or cuts "
                "whose server parts overlap (e.g. every D head <= 2 and tail <= 2 for the 5-block reference network)."
            )
        self.client_domains = list(client_domains)
        self.client_sizes = [int(n) for n in client_sizes]
        self.plan, self.G, self.D, self._feature_block = plan, G, D, feature_block
        self._round_members = tuple(first)
        self._noise.manual_seed(self.seed)
        log.info("built %d clients; plan %s", self.num_clients, [c.as_tuple() for c in plan])

    def _check_processes(self, num_clients: int) -> None:
        """Refuse a Trainer strategy or process count that cannot shard these clients, naming what works."""
        world, _ = self._world()
        participation = self.federation.participation
        check_strategy(self.trainer.strategy, world, num_clients, participation, clients_per_round(num_clients, participation))
        if world > 1 and self.trainer._accelerator_connector.use_distributed_sampler:
            raise ConfigError(
                "A run sharded over processes needs Trainer(use_distributed_sampler=False): every rank reads every "
                "client's batch stream (HuSCFGAN trains its own clients on it), so Lightning must not split the "
                "batches itself. The CLI sets it; set it when you build the Trainer in Python."
            )

    def _shard_clients(self) -> None:
        """In a run sharded over processes: hold this rank's contiguous share of the round's clients (rebuilt from
        their initial state: nothing has trained yet) and make the server blocks a replica of a sharded server."""
        world, _ = self._world()
        if world == 1 or self.G.resident != self.participants:
            return  # one process, or sharded already
        shapes = self._block_input_shapes()
        for net in (self.G, self.D):
            net.set_resident(self._my_share(self.participants))
            net.shard_server(shapes[net.name])
        self._g_params = None
        log.info("clients sharded over %d processes, %d each at most", world, -(-len(self.participants) // world))

    def _world(self) -> tuple[int, int]:
        """(processes, this one's rank) of the Trainer's strategy; (1, 0) without a Trainer."""
        if self._trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    @property
    def sharded(self) -> bool:
        """Whether the clients are sharded over several processes (this one holds the resident ones)."""
        return self._world()[0] > 1

    @torch.no_grad()
    def _block_input_shapes(self) -> dict[str, list[tuple[int, ...]]]:
        """Per network, each block's per-sample input shape (a sharded server calls a block on an empty batch)."""
        shapes: dict[str, list[tuple[int, ...]]] = {}
        labels = torch.arange(2) % self.num_classes
        fake = None
        for name, template in (("G", self.generator_template), ("D", self.discriminator_template)):
            seen: list[tuple[int, ...]] = []
            hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[1:]))) for b in template.blocks]
            was = template.training
            try:
                template.eval()
                fake = template(torch.zeros(2, self.z_dim), labels) if name == "G" else template(fake, labels)
            finally:
                template.train(was)
                for hook in hooks:
                    hook.remove()
            shapes[name] = seen
        return shapes

    def _check_templates(self) -> None:
        """A tiny forward of the unsplit templates, so a mismatched network fails here, clearly."""
        labels = torch.arange(2) % self.num_classes
        was = self.generator_template.training, self.discriminator_template.training
        try:
            with torch.no_grad():
                self.generator_template.eval()
                self.discriminator_template.eval()
                fake = self.generator_template(torch.zeros(2, self.z_dim), labels)
                out = self.discriminator_template(fake, labels)
        except Exception as err:  # a user network of the wrong shape: say which and what to check
            raise ConfigError(
                f"The generator and discriminator do not fit together ({type(err).__name__}: {err}). The generator's "
                f"first block must take (z of size z_dim={self.z_dim}, labels) and the discriminator must take the "
                f"generator's images and labels; check z_dim, num_classes and the image shape."
            ) from err
        finally:
            self.generator_template.train(was[0])
            self.discriminator_template.train(was[1])
        if out.shape[-1] != 1:
            raise ConfigError(f"The discriminator must output one probability per sample; got shape {tuple(out.shape)}.")

    def setup(self, stage: str) -> None:
        """Build the clients from the datamodule's partition (unless a checkpoint or the user already did), and
        in a run sharded over processes keep this rank's share of them."""
        if self.G is not None:
            self._check_processes(self.num_clients)
            self._shard_clients()
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "client_domains"):
            raise ConfigError(
                "HuSCFGAN needs to know its clients: train it with a HuSCFDataModule, or call "
                "model.configure_clients(client_domains, client_sizes) before trainer.fit."
            )
        datamodule.setup(stage)
        if getattr(datamodule, "num_classes", self.num_classes) > self.num_classes:
            raise ConfigError(
                f"The data has {datamodule.num_classes} classes but the model is built for num_classes="
                f"{self.num_classes}; set --model.num_classes={datamodule.num_classes}."
            )
        self._check_processes(len(datamodule.client_domains))
        self.configure_clients(
            datamodule.client_domains,
            datamodule.client_sizes,
            batch_size=datamodule.batch_size,
            progress_bar=self.trainer.progress_bar_callback is not None,  # the Trainer's progress-bar setting
        )
        self._shard_clients()

    def on_fit_start(self) -> None:
        """Refuse a Trainer length that is not this model's rounds: a partial round would never be aggregated."""
        trainer = self.trainer
        if trainer.max_steps == -1 and trainer.max_epochs != self.max_epochs:
            raise ConfigError(
                f"The Trainer runs max_epochs={trainer.max_epochs} but this model trains rounds={self.rounds} x "
                f"local_epochs={self.local_epochs} = {self.max_epochs} epochs; use "
                "Trainer(max_epochs=model.max_epochs) (the CLI sets it from model.rounds)."
            )

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """One Adam over all G copies and one over all D copies (Adam is elementwise: one step over a stacked
        tensor is one step of every client's copy in it)."""
        betas = tuple(self.hparams.betas)
        if self.device.type == "cpu":  # PyTorch's CPU step, in chunks: no fresh stack-sized temporaries each step
            opt_g = ChunkedAdam(self.G.parameters(), lr=self.hparams.lr_g, betas=betas)
            opt_d = ChunkedAdam(self.D.parameters(), lr=self.hparams.lr_d, betas=betas)
            return opt_g, opt_d
        fused = self.device.type == "cuda" or None  # one fused kernel per step on a GPU; PyTorch's default elsewhere
        opt_g = torch.optim.Adam(self.G.parameters(), lr=self.hparams.lr_g, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(self.D.parameters(), lr=self.hparams.lr_d, betas=betas, fused=fused)
        return opt_g, opt_d

    def configure_callbacks(self) -> list[pl.Callback]:
        """The round callbacks for this run's settings; instances already on the Trainer are kept."""
        from huscf_lightning.callbacks import default_callbacks

        return default_callbacks(self, self.trainer.callbacks if self._trainer is not None else ())

    # ----------------------------------------------------------------- rounds
    @property
    def partial_participation(self) -> bool:
        """Whether only some clients train in a round (``federation.participation`` below every client)."""
        return clients_per_round(self.num_clients, self.federation.participation) < self.num_clients

    @property
    def participants(self) -> tuple[int, ...]:
        """The clients training in the current round (global indices), over all processes: in one process the
        networks' resident clients, in a sharded run the union of every rank's."""
        return self._round_members

    @property
    def local_positions(self) -> list[int]:
        """Where this process's resident clients sit among the round's `participants`."""
        if len(self.participants) == len(self.G.resident):
            return list(range(len(self.participants)))
        where = {client: p for p, client in enumerate(self.participants)}
        return [where[client] for client in self.G.resident]

    def _my_share(self, clients: Sequence[int]) -> tuple[int, ...]:
        """This process's contiguous share of ``clients`` (all of them in one process)."""
        world, rank = self._world()
        return tuple(clients[i] for i in client_shard(len(clients), world, rank)) if world > 1 else tuple(clients)

    def on_train_epoch_start(self) -> None:
        """At a round's first epoch with partial participation: make the round's participants resident (the
        previous ones were written to the store at the last round end) and give their copies fresh optimiser
        state, as a federated client builds its optimiser when it is selected; the server blocks keep theirs."""
        epoch = self.trainer.current_epoch
        if not self.partial_participation or epoch % self.local_epochs:
            return
        drawn = draw_participants(self.num_clients, self.federation.participation, self.seed, self.current_round)
        self._round_members = drawn
        self.G.set_resident(self._my_share(drawn))  # a sharded run: each rank holds its share of them
        self.D.set_resident(self._my_share(drawn))
        self._rebuild_optimizers()
        log.info("round %d: clients %s take part", self.current_round, list(drawn))

    def _rebuild_optimizers(self) -> None:
        """New optimisers over the networks' current parameters, carrying every parameter's state the old ones
        had for it (the server blocks'; the stacks are new tensors and start afresh)."""
        strategy = self.trainer.strategy
        fresh = list(self.configure_optimizers())
        for old, new in zip(strategy.optimizers, fresh):
            for group in new.param_groups:
                for param in group["params"]:
                    if param in old.state:
                        new.state[param] = old.state[param]
        strategy.optimizers = fresh
        self._g_params = None

    def is_round_end(self, trainer: pl.Trainer) -> bool:
        """True during the last epoch of a round (callbacks act in its on_train_epoch_end)."""
        return (trainer.current_epoch + 1) % self.local_epochs == 0

    @property
    def current_round(self) -> int:
        """1-based index of the round in progress (the completed round's, at its end and after training)."""
        epoch = self.trainer.current_epoch
        last = self.trainer.max_epochs
        if last is not None and last > 0:
            epoch = min(epoch, last - 1)  # after fit, Lightning's epoch counter sits one past the last epoch
        return epoch // self.local_epochs + 1

    def on_train_epoch_end(self) -> None:
        """At a round's end: open its `RoundState` and run the round callbacks over it, in stage order."""
        if not self.is_round_end(self.trainer):
            return
        from huscf_lightning.callbacks.round import run_round_end

        features = None
        if self._feature_block is not None:
            if self._round_activation is None:
                raise RuntimeError("The round ended before any step of its last epoch ran; no clustering features.")
            means = self._round_activation.client_means(len(self.G.resident))
            if self.sharded:  # every rank's clients, in client order (the shards are contiguous, in rank order)
                means = torch.cat([part.to(means.device) for part in gather_objects(means.cpu())])
            # (K, C, L): channels by positions, as the KLD needs; a flat (K, D) activation is one channel of D positions
            features = means.flatten(2) if means.dim() > 2 else means.unsqueeze(1)
            self._round_activation = None
        last = self.current_round == self.trainer.max_epochs // self.local_epochs
        clients = list(self.participants)
        state = RoundState(
            self.current_round,
            [self.client_domains[i] for i in clients],
            [self.client_sizes[i] for i in clients],
            last,
            features,
            clients=clients,
        )
        run_round_end(self.trainer, self, state)

    # ----------------------------------------------------------------- training
    def forward(self, z: Sequence[Tensor], labels: Sequence[Tensor]) -> list[Tensor]:
        """Per-client generated images for per-client noise and labels."""
        return self.G(z, labels)

    def training_step(self, batch: Sequence[tuple[Tensor, Tensor]], batch_idx: int) -> None:
        """One iteration of METHOD.md for all clients in lock-step: G forward, D on detached fakes and on
        reals (keeping the clustering features during a round's last epoch), D step, then G through D."""
        opt_g, opt_d = self.optimizers()
        # The loader yields every client's batch. The round's clients (all, or the participants) draw their noise
        # from one stream, whatever the number of processes; each process trains its resident share of them.
        round_clients = self.participants
        round_sizes = [batch[i][0].shape[0] for i in round_clients]
        local = self.local_positions
        batch = [batch[round_clients[p]] for p in local]
        reals = [x for x, _ in batch]
        labels = [y for _, y in batch]
        sizes = [x.shape[0] for x in reals]
        noise = torch.randn(sum(round_sizes), self.z_dim, generator=self._noise, device=self._noise.device).to(self.device)
        noise = noise.split(round_sizes)
        if self.plan.placement == "md_gan":
            drawn = self._server_drawn_labels(round_sizes)
            fake_labels = [drawn[p] for p in local]
        else:
            fake_labels = labels
        fakes = self.G([noise[p] for p in local], fake_labels)
        g_dangling, g_inputs = self.G.dangling, self.G.dangling_inputs
        if self.plan.placement == "md_gan":
            fakes = self._send_generated(fakes, fake_labels)

        keep = self._feature_block is not None and self.is_round_end(self.trainer)
        # No toggle_optimizer (a Python loop over every client's parameters, twice per step): the D loss
        # reaches no G parameter (the fakes are detached), and the G backward is restricted to G's
        # parameters with `inputs`, so autograd skips D's weight gradients as a toggle would.
        with self.D.shared_views():  # one backward through both passes: each D tensor's client gradients stacked once
            d_fake = self.D([f.detach() for f in fakes], fake_labels)
            fake_dangling = self.D.dangling
            if keep:  # the round's clustering feature (METHOD.md): the last step's activation, whenever the epoch ends
                d_real, self._round_activation = self.D.forward_keeping(reals, labels, self._feature_block)
            else:
                d_real = self.D(reals, labels)
        weights = self._sample_weights(sizes, sum(round_sizes))
        loss_d = _client_bce(d_real, 1.0, weights) + _client_bce(d_fake, 0.0, weights) + _nothing(fake_dangling + self.D.dangling)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        sum_gradients(self.D.server_blocks.parameters())  # a sharded run: the loss is a sum over every rank's clients
        opt_d.step()

        loss_g = _client_bce(self.D(fakes, fake_labels), 1.0, weights) + _nothing(self.D.dangling + g_dangling)
        opt_g.zero_grad(set_to_none=True)
        # a sharded run also names the empty-batch inputs: autograd prunes what leads to no input, and every rank
        # must run every server batch norm's backward sums, used by its clients or not
        self.manual_backward(loss_g, inputs=self._generator_parameters() + self.D.dangling_inputs + g_inputs)
        sum_gradients(self.G.server_blocks.parameters())  # (nothing to do in one process)
        opt_g.step()

        k = len(round_clients)  # the mean over the round's clients: each rank's share, summed over ranks
        self.log_dict(
            {"train/loss_d": loss_d.detach() / k, "train/loss_g": loss_g.detach() / k},
            prog_bar=True, sync_dist=self.sharded, reduce_fx="sum",
        )

    def _server_drawn_labels(self, sizes: list[int]) -> list[Tensor]:
        """MD-GAN: the labels the server conditions each client's generated batch on (uniform over classes)."""
        drawn = torch.randint(self.num_classes, (sum(sizes),), generator=self._noise, device=self._noise.device)
        return list(drawn.to(self.device).split(sizes))

    def _send_generated(self, fakes: Sequence[Tensor], fake_labels: Sequence[Tensor]) -> list[Tensor]:
        """MD-GAN: each generated batch and the labels it was drawn for go from the server to its client (the
        images' gradient comes back over the wire in the G step); real data never leaves a client."""
        sizes = [fake.shape[0] for fake in fakes]
        for i, drawn in zip(self.G.resident, fake_labels):
            self.wire.account(i, "G.labels", DOWN, drawn.numel() * drawn.element_size(), "synthetic labels")
        carried = self.wire.send_group(torch.cat(list(fakes)), list(self.G.resident), sizes, "G.out", DOWN)
        return list(carried.split(sizes))

    def _generator_parameters(self) -> list[Tensor]:
        """Every G parameter (client copies and server blocks), listed once and reused every step."""
        if self._g_params is None:
            self._g_params = [p for p in self.G.parameters() if p.requires_grad]
        return self._g_params

    def _sample_weights(self, sizes: list[int], total: int) -> Tensor:
        """1 / n_i for each of client i's samples (the sum over clients of each client's mean loss), or 1 / N for
        all, N = ``total`` over every process (the mean over one batch: centralized training). Made once per
        batch-size pattern and device (no host-to-device copy, so no wait for the GPU, on the step path)."""
        key = (tuple(sizes), total, self.device)
        if key not in self._loss_weights:
            counts = torch.tensor(sizes)
            per_sample = torch.full_like(counts, total) if self.plan.placement == "central" else counts
            self._loss_weights[key] = torch.repeat_interleave(1.0 / per_sample, counts).to(self.device)
        return self._loss_weights[key]

    def on_train_start(self) -> None:
        """A centralized baseline uploads every client's data once, before its first step: the wire counts it."""
        if self.plan.placement != "central" or self.trainer.global_step > 0:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "client_data"):
            return
        for i in self.G.resident:  # each process counts its own clients' upload
            images, labels = datamodule.client_data(i)
            nbytes = images.numel() * images.element_size() + labels.numel() * labels.element_size()
            self.wire.account(i, "data", UP, nbytes, "raw data")

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, client: int, labels: Tensor, z: Tensor | None = None, batch_size: int = 1000) -> Tensor:
        """Images from ``client``'s generator (its head, the server blocks, its tail), in eval mode."""
        path = self.G.client_path(client)
        was_training = self.G.training  # the path is a fresh wrapper: the mode to restore is the network's
        path.eval()
        labels = labels.to(self.device)
        if z is None:
            z = torch.randn(labels.shape[0], self.z_dim, device=self.device)
        try:
            return torch.cat([path(zc, yc) for zc, yc in zip(z.split(batch_size), labels.split(batch_size))])
        finally:
            self.G.train(was_training)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The run's own state beside Lightning's. A run sharded over processes saves every client, as one process
        would (`sharded_checkpoint.gather`, a collective: Lightning calls this on every rank, rank 0 writes)."""
        wire = self.wire.state_dict()
        if self.sharded:
            sharded_checkpoint.gather(checkpoint, {"G.": self.G, "D.": self.D}, self.participants)
            wire = Wire.summed_state(gather_objects(wire))
        checkpoint["huscf"] = {
            "layout": STATE_LAYOUT,
            "resident": list(self.participants),  # the round's clients, whatever the number of processes
            # with every client resident the stacks are the whole state; else the waiting clients' models too
            "stores": {"G": self.G.store.state_dict(), "D": self.D.store.state_dict()} if self.partial_participation else None,
            "plan": self.plan.to_dict(),
            "plan_report": self.plan_report,
            "client_domains": self.client_domains,
            "client_sizes": self.client_sizes,
            "noise_rng": self._noise.get_state(),
            "wire": wire,  # the round so far, for a checkpoint taken inside a round
            "networks": {"generator": network_spec(self.generator_template),
                         "discriminator": network_spec(self.discriminator_template)},
            "mlflow_run_id": _mlflow_run_id(self._trainer),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("huscf")
        held = checkpoint.get("state_dict", {})
        for key in [k for k in held if k.startswith(("generator_template.", "discriminator_template."))]:
            del held[key]  # checkpoints from before the templates left the module's parameters
        if state is None:
            raise ConfigError(
                "This checkpoint was not written by HuSCFGAN (no 'huscf' section): resume only from checkpoints of a "
                "huscf_lightning run (they are under checkpoints/ and logged to MLflow as artifacts)."
            )
        if state.get("layout") != STATE_LAYOUT or any(k.startswith(("G.client_blocks.", "D.client_blocks.")) for k in held):
            raise ConfigError(
                "This checkpoint was written by an older huscf_lightning that kept a module per client "
                "(G.client_blocks.<client>.<block>...); this version stacks the clients' copies of a block into one "
                "tensor per parameter and cannot resume or evaluate it. Resume it with the huscf_lightning version "
                "that wrote it, or start a new run."
            )
        plan = SplitPlan.from_dict(state["plan"])
        if self.G is None:
            self.plan_report = state["plan_report"]
            self.configure_clients(state["client_domains"], state["client_sizes"], plan=plan)
        elif plan != self.plan:
            raise ConfigError(
                "The checkpoint's split plan differs from this run's plan; resume with the same plan section "
                "(the plan is logged as plan.json with every run)."
            )
        self._round_members = tuple(state["resident"])  # the round's clients, as one process holds them
        mine = self._my_share(self._round_members)
        for net in (self.G, self.D):
            if state["stores"] is not None:
                net.store.load_state_dict(state["stores"][net.name])
            if net.resident != mine:
                net.set_resident(mine)  # before Lightning loads the stacks' saved rows
        if self.sharded:  # keep this rank's clients' rows, whatever number of processes wrote the checkpoint
            sharded_checkpoint.shard(checkpoint, {"G.": self.G, "D.": self.D}, self._round_members)
        saved = next((t.dtype for t in held.values() if torch.is_tensor(t) and t.is_floating_point()), None)
        if saved is not None:
            # Lightning loads the weights before the precision plugin converts the module: networks built in
            # float32 would round a float64 (64-true) checkpoint's weights on the way in
            self.G.to(saved)
            self.D.to(saved)
        self._noise.set_state(state["noise_rng"])
        self.wire.load_state_dict(state["wire"])
        if self.sharded and self.trainer.global_rank != 0:
            self.wire.reset()  # the counts so far are the whole run's: rank 0 carries them, the ranks' sum is right
        self.resumed_from_run = state.get("mlflow_run_id")


STATE_LAYOUT = "stacked-clients-v1"  # the checkpoint layout of the clients' copies (split.stacked)


def _mlflow_run_id(trainer: pl.Trainer | None) -> str | None:
    """The MLflow run this training logs to, so a run resumed from the checkpoint can name it."""
    logger = mlflow_logger(trainer) if trainer is not None else None
    return logger.run_id if logger is not None else None


def network_spec(net: BlockNetwork) -> dict | None:
    """How to rebuild ``net`` (class path and constructor arguments) when it records them in ``init_args``, as the
    reference networks do; a checkpoint keeps it so ``evaluate`` can rebuild the run's networks (its weights come
    from the checkpoint). None for a network that does not say how it was built."""
    init_args = getattr(net, "init_args", None)
    if not isinstance(init_args, dict):
        return None
    return {"class_path": f"{type(net).__module__}.{type(net).__qualname__}", "init_args": dict(init_args)}


def _nothing(dangling: list[Tensor]) -> Tensor | float:
    """Zero, depending on a sharded server's empty-batch outputs (so the backward runs their collectives too)."""
    return sum(t.sum() for t in dangling) * 0.0 if dangling else 0.0


def _client_bce(outputs: Sequence[Tensor], target: float, weights: Tensor) -> Tensor:
    """Sum over clients of each client's mean BCE, computed in one call over the concatenated outputs.

    ``weights`` holds 1 / (client's batch size) for every sample (`HuSCFGAN._sample_weights`).
    """
    probs = torch.cat(list(outputs)).reshape(-1)
    per_sample = F.binary_cross_entropy(probs, torch.full_like(probs, target), reduction="none")
    return (per_sample * weights).sum()
