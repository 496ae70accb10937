"""HuSCFGAN: the LightningModule that trains one conditional GAN across all clients in lock-step.

A training step is one iteration of METHOD.md for every client at once: G forward (client head -> server
-> client tail), a D step on detached fakes and on reals, then a G step through D, the losses summed over
clients. What a method changes in it is asked of its strategy and placement; the clients and processes are
the roster's (`engine.roster`). A round's end opens a `RoundState` for the round callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext

import lightning.pytorch as pl
import torch
from torch import Tensor

from huscf_lightning.collectives import sum_gradients
from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.engine import checkpoint_layout, optimisers
from huscf_lightning.engine.features import RoundFeatures, clustering_feature_block
from huscf_lightning.engine.losses import SampleWeights, client_bce, nothing
from huscf_lightning.engine.roster import ClientRoster, check_processes, client_datamodule
from huscf_lightning.engine.templates import NetworkTemplates
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.rounds import RoundSchedule
from huscf_lightning.federation.strategy import FederationStrategy, build_strategy
from huscf_lightning.nets import BlockNetwork, ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.privacy import PrivacySpec
from huscf_lightning.privacy.initialisation import initialise_privately
from huscf_lightning.privacy.masking import client_secret
from huscf_lightning.privacy.noise import NoisyWire
from huscf_lightning.privacy.nopeek import NoPeek
from huscf_lightning.split.network import SplitNetwork
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.source import build_plan
from huscf_lightning.split.wire import Wire

log = logging.getLogger(__name__)


class HuSCFGAN(pl.LightningModule):
    """Heterogeneous U-shaped split + clustered federated training of a conditional GAN.

    The clients come from the datamodule at ``setup``, or from `configure_clients`. A run is ``rounds *
    local_epochs`` epochs: ``Trainer(max_epochs=model.max_epochs)`` (the CLI sets it). ``batch_clients``: run
    the clients' copies of a block in one ``torch.func.vmap`` call (True), one by one (False), or by device
    (None: batched on a GPU, one by one on a CPU, where batching is slower).
    """

    def __init__(
        self,
        generator: BlockNetwork | None = None,
        discriminator: BlockNetwork | None = None,
        plan: PlanSpec | None = None,
        federation: FederationSpec | None = None,
        evaluation: EvaluationSpec | None = None,
        privacy: PrivacySpec | None = None,
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
        self.templates = NetworkTemplates(
            generator if generator is not None else ReferenceGenerator(z_dim, num_classes),
            discriminator if discriminator is not None else ReferenceDiscriminator(num_classes), z_dim, num_classes,
        )
        self.plan_spec, self.federation = plan or PlanSpec(), federation or FederationSpec()
        self.evaluation = evaluation or EvaluationSpec()
        self.privacy = privacy or PrivacySpec()
        self.plan_spec.validate()
        self.evaluation.validate()
        self.privacy.validate()
        self.strategy: FederationStrategy = build_strategy(self.federation, seed)  # checks the federation section
        self.privacy.check_method(self.strategy)
        self.schedule = RoundSchedule(rounds, local_epochs)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.seed, self.batch_clients = seed, batch_clients
        self.wire = NoisyWire(self.privacy, seed) if self.privacy.noisy else Wire()
        self.nopeek = NoPeek(self.privacy.nopeek_weight) if self.privacy.nopeek_weight > 0 else None
        self.roster: ClientRoster | None = None
        self.plan_report: dict | None = None
        self.G: SplitNetwork | None = None
        self.D: SplitNetwork | None = None
        self.noise = torch.Generator()  # every client's noise (and MD-GAN's labels), one seeded stream
        self.resumed_from_run: str | None = None
        self.features: RoundFeatures | None = None  # the round's clustering feature, once the clients are built
        self._sample_weights = SampleWeights(self.strategy.placement)
        self._g_params: list[Tensor] | None = None

    # ----------------------------------------------------------------- clients and networks
    generator_template = property(lambda self: self.templates.generator, doc="The unsplit generator.")
    discriminator_template = property(lambda self: self.templates.discriminator, doc="The unsplit discriminator.")
    rounds = property(lambda self: self.schedule.rounds)
    local_epochs = property(lambda self: self.schedule.local_epochs)
    max_epochs = property(lambda self: self.schedule.max_epochs, doc="rounds x local_epochs.")
    plan = property(lambda self: self.roster.plan if self.roster else None, doc="The clients' `SplitPlan`.")
    client_domains = property(lambda self: self.roster.client_domains if self.roster else [], doc="Per client.")
    client_sizes = property(lambda self: self.roster.client_sizes if self.roster else [], doc="Per client.")
    num_clients = property(lambda self: len(self.client_domains))
    domain_names = property(lambda self: list(dict.fromkeys(self.client_domains)), doc="In first-client order.")
    participants = property(lambda self: self.roster.members, doc="The round's clients, over all processes.")
    partial_participation = property(lambda self: self.roster.partial, doc="Only some clients train a round.")
    sharded = property(lambda self: self._world()[0] > 1, doc="Clients sharded over several processes.")
    local_positions = property(lambda self: self.roster.local_positions(self.G.resident),
                               doc="Where this process's resident clients sit among the `participants`.")

    def configure_clients(
        self,
        client_domains: Sequence[str],
        client_sizes: Sequence[int],
        plan: SplitPlan | None = None,
        batch_size: int = 64,
        progress_bar: bool = True,
    ) -> None:
        """Build the roster, the plan and the split networks for these clients (idempotent for the same clients),
        checking the method can run on them, before training. ``batch_size``: the per-client batch, at which the
        latency model profiles the blocks; ``progress_bar``: a GA plan's, per generation."""
        if self.roster is not None:
            self.roster.check_same(client_domains, client_sizes)
            return
        roster = ClientRoster(client_domains, client_sizes, self.federation.participation, self.seed, self._world)
        roster.check_method(self.strategy)
        self.templates.check()
        if plan is None:
            networks, strategy = self.templates.networks(batch_size), self.strategy
            plan, self.plan_report = build_plan(self.plan_spec, roster.num_clients, networks, self.seed,
                                                strategy.needs_features, progress_bar, strategy.placement)
        G, D = roster.split_networks(plan, self.templates, self.wire, self.batch_clients)
        if self.privacy.private_initialisation:
            for net in (G, D):
                initialise_privately(net, client_secret(self.seed))
        self.features = RoundFeatures(clustering_feature_block(self.strategy, D, plan))
        self.roster, self.G, self.D = roster, G, D
        self.noise.manual_seed(self.seed)
        log.info("built %d clients; plan %s", self.num_clients, [c.as_tuple() for c in plan])

    def _world(self) -> tuple[int, int]:
        """(processes, this one's rank) of the Trainer's strategy; (1, 0) without a Trainer."""
        return (1, 0) if self._trainer is None else (self.trainer.world_size, self.trainer.global_rank)

    def setup(self, stage: str) -> None:
        """Build the clients from the datamodule's partition (unless a checkpoint or the user already did), and
        in a run sharded over processes keep this rank's share of them."""
        if self.roster is None:
            datamodule = client_datamodule(self._trainer, stage, self.num_classes)
            check_processes(self.trainer, len(datamodule.client_domains), self.federation.participation)
            self.configure_clients(datamodule.client_domains, datamodule.client_sizes, plan=None,
                                   batch_size=datamodule.batch_size,
                                   progress_bar=self.trainer.progress_bar_callback is not None)
        else:
            check_processes(self.trainer, self.num_clients, self.federation.participation)
        if self.privacy.noisy and self.sharded:
            raise ConfigError(
                "model.privacy.noise_multiplier > 0 runs in one process only: the noise is one seeded stream, and every "
                "process of a sharded run would draw the same values for its own clients, which a server could subtract "
                "away. Train the noisy run on one process (--trainer.devices=1), or turn the noise off."
            )
        if self.roster.shard((self.G, self.D), self.templates.block_input_shapes):
            self._g_params = None

    def on_fit_start(self) -> None:
        """Refuse a Trainer length that is not this model's rounds: a partial round would never be aggregated."""
        self.schedule.check_trainer(self.trainer.max_epochs, self.trainer.max_steps)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """One Adam over all G copies and one over all D copies (`engine.optimisers`)."""
        hp = self.hparams
        return optimisers.build_optimizers(self.G, self.D, hp.lr_g, hp.lr_d, hp.betas, self.device)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The round callbacks for this run's settings; instances already on the Trainer are kept."""
        from huscf_lightning.callbacks import default_callbacks

        return default_callbacks(self, self.trainer.callbacks if self._trainer is not None else ())

    # ----------------------------------------------------------------- rounds
    def on_train_epoch_start(self) -> None:
        """At a round's first epoch: with partial participation make the round's participants resident (the
        previous ones went to the store at the last round end) with fresh optimiser state, as a federated
        client builds its optimiser when selected; then let the method start its round."""
        if not self.schedule.is_round_start(self.trainer.current_epoch):
            return
        if self.roster.start_round(self.current_round, (self.G, self.D)):
            optimisers.replace(self.trainer.strategy, self.configure_optimizers())
            self._g_params = None
        self.strategy.start_round(self.current_round, {"G": self.G, "D": self.D})

    def is_round_end(self, trainer: pl.Trainer) -> bool:
        """True during the last epoch of a round (callbacks act in its on_train_epoch_end)."""
        return self.schedule.is_round_end(trainer.current_epoch)

    @property
    def current_round(self) -> int:
        """1-based index of the round in progress (the completed round's, at its end and after training)."""
        return self.schedule.round_of(self.trainer.current_epoch, self.trainer.max_epochs)

    def on_train_epoch_end(self) -> None:
        """At a round's end: open its `RoundState` and run the round callbacks over it, in stage order."""
        if not self.is_round_end(self.trainer):
            return
        from huscf_lightning.callbacks.round import run_round_end

        features = self.features.take(len(self.G.resident), self.sharded)
        last = self.current_round == self.trainer.max_epochs // self.local_epochs
        run_round_end(self.trainer, self, self.roster.round_state(self.current_round, last, features))

    # ----------------------------------------------------------------- training
    def forward(self, z: Sequence[Tensor], labels: Sequence[Tensor]) -> list[Tensor]:
        """Per-client generated images for per-client noise and labels."""
        return self.G(z, labels)

    def training_step(self, batch: Sequence[tuple[Tensor, Tensor]], batch_idx: int) -> None:
        """One iteration of METHOD.md for all clients in lock-step: G forward, D on detached fakes and on
        reals (keeping the clustering features during a round's last epoch), D step, then G through D."""
        opt_g, opt_d = self.optimizers()
        placement = self.strategy.placement
        # The loader yields every client's batch. The round's clients (all, or the participants) draw their noise
        # from one stream, whatever the number of processes; each process trains its resident share of them.
        round_clients = self.participants
        round_sizes = [batch[i][0].shape[0] for i in round_clients]
        local = self.local_positions
        reals, labels = zip(*(batch[round_clients[p]] for p in local))
        reals, labels = list(reals), list(labels)
        noise = torch.randn(sum(round_sizes), self.z_dim, generator=self.noise, device=self.noise.device)
        noise = noise.to(self.device).split(round_sizes)
        fake_labels = placement.fake_labels(labels, round_sizes, local, self.noise, self.num_classes, self.device)
        with self._watching("G.head") as g_sent:
            fakes = self.G([noise[p] for p in local], fake_labels)
        g_dangling, g_inputs = self.G.dangling, self.G.dangling_inputs
        fakes = placement.deliver_fakes(fakes, fake_labels, self.wire, self.G.resident)

        keep = self.features.block is not None and self.is_round_end(self.trainer)
        # No toggle_optimizer (a Python loop over every client's parameters, twice per step): the D loss
        # reaches no G parameter (the fakes are detached), and the G backward is restricted to G's
        # parameters with `inputs`, so autograd skips D's weight gradients as a toggle would.
        with self.D.shared_views():  # one backward through both passes: each D tensor's client gradients stacked once
            d_fake = self.D([f.detach() for f in fakes], fake_labels)
            fake_dangling = self.D.dangling
            with self._watching("D.head") as d_sent:
                if keep:  # the round's clustering feature (METHOD.md): the last step's activation, whenever the epoch ends
                    d_real, self.features.kept = self.D.forward_keeping(reals, labels, self.features.block)
                else:
                    d_real = self.D(reals, labels)
        weights = self._sample_weights([x.shape[0] for x in reals], sum(round_sizes), self.device)
        loss_d = client_bce(d_real, 1.0, weights) + client_bce(d_fake, 0.0, weights)
        loss_d = loss_d + nothing(fake_dangling + self.D.dangling)
        if self.nopeek is not None:  # what a client's D head sends, against its real images and labels
            loss_d = loss_d + self._decorrelation(d_sent, [torch.cat([x.flatten(1), self._one_hot(y, x)], 1)
                                                           for x, y in zip(reals, labels)])
        self._step(opt_d, loss_d, self.D)

        loss_g = client_bce(self.D(fakes, fake_labels), 1.0, weights) + nothing(self.D.dangling + g_dangling)
        if self.nopeek is not None:  # what a client's G head sends, against the labels it generates for
            loss_g = loss_g + self._decorrelation(g_sent, [self._one_hot(y, fakes[0]) for y in fake_labels])
        # a sharded run also names the empty-batch inputs: autograd prunes what leads to no input, and every rank
        # must run every server batch norm's backward sums, used by its clients or not
        self._step(opt_g, loss_g, self.G, self._generator_parameters() + self.D.dangling_inputs + g_inputs)

        k = len(round_clients)  # the mean over the round's clients: each rank's share, summed over ranks
        self.log_dict({"train/loss_d": loss_d.detach() / k, "train/loss_g": loss_g.detach() / k},
                      prog_bar=True, sync_dist=self.sharded, reduce_fx="sum")

    def _watching(self, cut: str):
        """What the clients send over ``cut`` in the forward inside, by client, when NoPeek is on (else nothing)."""
        return self.nopeek.watching(self.wire, cut) if self.nopeek is not None else nullcontext({})

    def _decorrelation(self, sent: dict[int, Tensor], inputs: list[Tensor]) -> Tensor | float:
        """NoPeek's penalty on what the resident clients sent, given their inputs in resident order."""
        penalty = self.nopeek.penalty(sent, dict(zip(self.D.resident, inputs)))
        return 0.0 if penalty is None else penalty

    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(labels, self.num_classes).to(like.dtype)

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, net: SplitNetwork, inputs: list[Tensor] | None = None
              ) -> None:
        """``net``'s step on ``loss`` plus the method's local penalty: backward, the server blocks' gradients
        summed over processes (a sharded run), one optimiser step."""
        penalty = self.strategy.local_penalty(net)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss if penalty is None else loss + penalty, inputs=inputs)
        sum_gradients(net.server_blocks.parameters())
        opt.step()

    def _generator_parameters(self) -> list[Tensor]:
        """Every G parameter (client copies and server blocks), listed once and reused every step."""
        if self._g_params is None:
            self._g_params = [p for p in self.G.parameters() if p.requires_grad]
        return self._g_params

    def on_train_start(self) -> None:
        """What the method uploads before its first step (a centralized baseline: the data; the wire counts it)."""
        if self.trainer.global_step == 0:  # each process counts its own clients' upload
            datamodule = getattr(self.trainer, "datamodule", None)
            self.strategy.placement.upload_before_training(self.wire, self.G.resident, datamodule)

    # ----------------------------------------------------------------- generation and checkpoints
    def generate(self, client: int, labels: Tensor, z: Tensor | None = None, batch_size: int = 1000) -> Tensor:
        """Images from ``client``'s generator (its head, the server blocks, its tail), in eval mode."""
        labels = labels.to(self.device)
        z = torch.randn(labels.shape[0], self.z_dim, device=self.device) if z is None else z
        return self.G.client_eval(client, (z, labels), batch_size)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The run's own section beside Lightning's (`engine.checkpoint_layout`)."""
        checkpoint_layout.write_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Rebuild or check the clients from the checkpoint's section before Lightning loads the weights."""
        checkpoint_layout.read_run_state(self, checkpoint)
