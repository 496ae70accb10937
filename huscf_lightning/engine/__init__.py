"""The training engine: the LightningModule (`module.HuSCFGAN`) and what it delegates to, one concern a module:
who the clients are and where they run (`roster`), the optimisers (`optimisers`), the checkpoint layout
(`checkpoint_layout`, `sharded_checkpoint`, `checkpoints`), processes (`distributed`) and the MLflow record
(`tracking`)."""
