"""The one validated configuration schema (sections as in the seeds' JSON files).

Every key has a real default, so a missing key is never silently ``None``. Unknown keys are
rejected (see ``loading.py`` for the error messages that name the closest valid key).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)


class MelPatchSettings(_Section):
    """Weight-free ``mel-patch`` encoder: log-mel patches + a fixed seeded projection."""

    n_mels: int = Field(64, ge=8)
    n_fft: int = Field(1024, ge=64)
    hop_length: int = Field(512, ge=16)
    patch_mels: int = Field(32, ge=1)
    patch_frames: int = Field(16, ge=1)
    embed_dim: int = Field(768, ge=8)
    projection_seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _patch_fits(self) -> MelPatchSettings:
        if self.n_mels % self.patch_mels != 0:
            raise ValueError(f"patch_mels ({self.patch_mels}) must divide n_mels ({self.n_mels})")
        return self


class AstSettings(_Section):
    """The ``ast`` encoder: a hub id or a local directory made with ``save_pretrained``."""

    model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    batch_size: int = Field(8, ge=1)
    # Log-mel frames per clip (None: the model's own, 1024 for the AudioSet model = 10.24 s). A
    # shorter length cuts the token count (512 frames: 602 tokens); the time axis of the position
    # embeddings is centre-cropped (shorter) or interpolated (longer), as the AST authors did.
    max_length: int | None = Field(None, ge=16)


class AisfxSettings(_Section):
    """The ``aisfx`` encoder: the pretrained sound-effects CNN of the ``aisfx`` package."""

    # A checkpoint of the same format (None: the one inside the installed aisfx wheel).
    weights: str | None = None
    # Hop between 100-frame blocks, as a fraction of a block (the authors' 0.5: about 1.16 s).
    hop_fraction: float = Field(0.5, gt=0, le=1)
    batch_size: int = Field(32, ge=1)  # clips per forward pass


class TextEncoderSettings(_Section):
    """Text encoders of the ``flux`` / ``sd`` target profiles: hub ids or local directories."""

    clip_model: str = "openai/clip-vit-large-patch14"
    clip_tokenizer: str | None = None  # default: the model's own directory / id
    clip_sequence_length: int = Field(77, ge=1)
    t5_model: str = "google/t5-v1_1-xxl"
    t5_tokenizer: str | None = None
    t5_sequence_length: int = Field(17, ge=1)  # the original experiments' FLUX prompt length


class FedA2VSettings(_Section):
    # Targets and encoder.
    target_profile: Literal["minilm", "flux", "sd"] = "minilm"
    prompt_template: str = "a photo of {label}"
    text_encoders: TextEncoderSettings = Field(default_factory=TextEncoderSettings)
    # The original's target file ({class: {'sd': ..., 'flux': {...}}}); replaces the text encoders.
    targets_file: str | None = None
    # "precomputed": the clips already are embeddings (data.dataset "precomputed"), passed through.
    audio_encoder: Literal["mel-patch", "ast", "aisfx", "precomputed"] = "mel-patch"
    mel_patch: MelPatchSettings = Field(default_factory=MelPatchSettings)
    ast: AstSettings = Field(default_factory=AstSettings)
    aisfx: AisfxSettings = Field(default_factory=AisfxSettings)
    use_cls_token_only: bool = False

    # Adapters (one per target slot).
    clip_adapter_hidden_dims: list[int] = Field(default_factory=lambda: [512])
    t5_adapter_hidden_dims: list[int] = Field(default_factory=lambda: [512])
    adapter_width: int = Field(256, ge=8)
    adapter_heads: int = Field(4, ge=1)
    clip_adapter_learning_rate: float = Field(1e-3, gt=0)
    clip_adapter_weight_decay: float = Field(1e-2, ge=0)
    clip_adapter_learning_rate_schedule: bool = False
    t5_adapter_learning_rate: float = Field(1e-3, gt=0)
    t5_adapter_weight_decay: float = Field(1e-2, ge=0)
    t5_adapter_learning_rate_schedule: bool = False
    adapter_cosine_loss_weight: float = Field(0.0, ge=0)
    optimizer_clip_gradients: bool = False
    # Precision of the arrays sent each round (adapters both ways, class statistics up); the server
    # aggregates in float32. float16 halves the bytes; values beyond +-65504 fail validation.
    transfer_dtype: Literal["float32", "float16"] = "float32"
    # avg, avg_unweighted, none (standalone), kd; robust to a few hostile nodes: median
    # (coordinate-wise) and trimmed_mean (coordinate-wise, trim_fraction cut at each end).
    adapter_aggregation_mode: Literal["avg", "avg_unweighted", "none", "kd", "median", "trimmed_mean"] = "avg"
    trim_fraction: float = Field(0.2, ge=0, lt=0.5)
    # kd: distil the global adapters from the clients' adapters on the server generator's samples.
    kd_training_epochs: int = Field(10, ge=1)
    kd_learning_rate: float = Field(1e-3, gt=0)
    kd_samples_per_class: int = Field(32, ge=1)

    # Per-class statistics sent by clients (None = the encoder's full token sequence).
    statistics_sequence_length: int | None = Field(None, ge=1)
    # K > 1: each class's statistics also hold a diagonal Gaussian mixture of K components
    # (weights, means, stds; FedPFT's uploads); the gaussian generator and the server generator's
    # training draws then sample it. K times the bytes of the mean + std.
    statistics_components: int = Field(1, ge=1, le=16)

    # Generators (SPEC 3.4). ``use_generator``: the server's generator (seed 001).
    use_generator: bool = True
    # gaussian: no learning, the server samples each class from its clients' N(mean, std^2) (a
    # baseline; server only). generator_conditioning "none" on the server: one generator per class.
    generator_type: Literal["vae", "gan", "gaussian"] = "vae"
    vae_arch: Literal["flat", "tokenwise"] = "flat"
    generator_conditioning: Literal["clip", "clip+t5", "none"] = "clip"
    generator_hidden_dim: int = Field(512, ge=8)
    generator_token_hidden_dim: int = Field(256, ge=8)
    generator_fusion_dim: int = Field(256, ge=8)
    generator_latent_dim: int = Field(256, ge=2)
    generator_learning_rate: float = Field(1e-3, gt=0)  # peak; cosine decay to 10 % over the run
    generator_beta_max: float = Field(0.01, ge=0)
    generator_training_epochs: int = Field(5, ge=0)
    generator_draws_per_statistic: int = Field(8, ge=1)
    generator_augmentation: bool = True
    generator_augmentation_noise: float = Field(0.1, ge=0)
    generator_training_sequence_length: int | None = Field(4, ge=1)
    generator_output_sequence_length: int | None = Field(None, ge=1)
    generator_interpolation: Literal["linear", "nearest", "cubic", "learned"] = "linear"
    generator_validation_frequency: int = Field(5, ge=0)
    synthetic_samples_per_class: int = Field(5, ge=0)
    # What the fine-tuning trains a synthetic row towards: its class's mean adapter output
    # ("class_mean"), or that row's own output of the adapters of the nodes that hold the class,
    # averaged ("teachers", as kd computes them): a target per sample, not per class.
    synthetic_targets: Literal["class_mean", "teachers"] = "class_mean"
    # Where the fine-tuning's synthetic rows come from: the server's generator (trained on the
    # uploaded statistics), or "clients": each node draws synthetic_samples_per_class samples per
    # class from its own generator (generator_training_mode: trained on its real clips) and
    # uploads them with its statistics (the generators themselves stay on the node).
    synthetic_source: Literal["server", "clients"] = "server"

    # Client-side generators (trained on the node's own data; they never leave the node).
    generator_training_mode: bool = False
    generator_only_mode: bool = False
    generator_granularity: Literal["unified", "per_class", "per_group"] = "unified"
    generator_class_groups: dict[str, list[str]] | None = None
    reset_generator_on_class_change: bool = True
    pretrained_generator_path: str | None = None
    client_generator_base_name: str = "client_generator"

    # Checkpoints (relative dirs resolve inside the run folder).
    generator_save_checkpoint: bool = True
    generator_load_checkpoint: bool = False
    generator_checkpoint_path: str | None = None
    generator_checkpoint_dir: str = "checkpoints"
    generator_checkpoint_base_name: str = "server_generator"
    generator_checkpoint_frequency: int = Field(5, ge=1)
    checkpoint_keep_last: int = Field(3, ge=1)
    # Start the global adapters from a server checkpoint (default: generator_checkpoint_path's file).
    adapter_load_checkpoint: bool = False
    adapter_checkpoint_path: str | None = None

    # Server fine-tuning of the global adapters on real + synthetic data.
    global_model_train_from_nodes_adapters: bool = True
    global_model_train_epochs: int = Field(10, ge=0)
    # Set: exactly this many optimizer steps per round instead of global_model_train_epochs passes
    # (passes over the reshuffled rows until the steps are taken): equal compute for methods
    # whose fine-tuning sets differ in size (class means only vs means + synthetic rows).
    global_model_train_steps: int | None = Field(None, ge=1)
    global_model_train_learning_rate: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _consistent_generators(self) -> FedA2VSettings:
        if self.generator_load_checkpoint and not self.generator_checkpoint_path:
            raise ValueError("generator_load_checkpoint is true but generator_checkpoint_path is not set")
        if self.adapter_load_checkpoint and not (self.adapter_checkpoint_path or self.generator_checkpoint_path):
            raise ValueError(
                "adapter_load_checkpoint is true but neither adapter_checkpoint_path nor "
                "generator_checkpoint_path is set"
            )
        if self.targets_file and self.target_profile == "minilm":
            raise ValueError("targets_file holds FLUX or SD targets: set target_profile to 'flux' or 'sd'")
        if self.generator_type != "vae" and self.vae_arch != "flat":
            raise ValueError(
                f"vae_arch chooses a VAE design; with generator_type '{self.generator_type}' leave vae_arch at 'flat'"
            )
        if self.generator_type == "gaussian":
            if self.client_generators:
                raise ValueError(
                    "generator_type 'gaussian' is the server's sampling baseline (no weights to train or send); "
                    "client generators are 'vae' or 'gan'"
                )
            if self.generator_load_checkpoint:
                raise ValueError(
                    "generator_type 'gaussian' has no weights to load: set generator_load_checkpoint to false"
                )
        if self.synthetic_source == "clients":
            if not (self.client_generators and self.synthetic_samples_per_class):
                raise ValueError(
                    "synthetic_source 'clients' uploads samples of the nodes' own generators: set "
                    "generator_training_mode to true and synthetic_samples_per_class above 0"
                )
            if self.generator_conditioning == "none" and self.generator_granularity != "per_class":
                raise ValueError(
                    "synthetic_source 'clients' needs a sample's class: with generator_conditioning 'none' set "
                    "generator_granularity to 'per_class' (one generator per class), or condition the generators"
                )
        synthetic_rows = self.use_generator or self.synthetic_source == "clients"
        if self.synthetic_targets == "teachers" and not (
            synthetic_rows and self.synthetic_samples_per_class and self.global_model_train_from_nodes_adapters
        ):
            raise ValueError(
                "synthetic_targets 'teachers' labels the server fine-tuning's synthetic rows; this run has none: "
                "set use_generator and global_model_train_from_nodes_adapters to true and synthetic_samples_per_class "
                "above 0, or leave synthetic_targets at 'class_mean'"
            )
        if self.adapter_aggregation_mode == "kd" and not self.use_generator:
            raise ValueError(
                "adapter_aggregation_mode 'kd' distils on the server generator's samples: set use_generator to true"
            )
        return self

    @property
    def client_generators(self) -> bool:
        """Whether nodes train their own generators this run."""
        return self.generator_training_mode or self.generator_only_mode


class FederationSettings(_Section):
    num_clients: int = Field(5, ge=1)
    global_rounds: int = Field(5, ge=1)
    local_epochs: int = Field(3, ge=0)
    # FedProx (Li et al., MLSys 2020): each node's adapter loss gets mu/2 * ||w - w_global||^2,
    # w_global being the adapters it received this round; 0: plain local training (FedAvg).
    proximal_mu: float = Field(0.0, ge=0)
    eval_gap: int = Field(1, ge=0)
    # Valid replies needed to aggregate a round; fewer skip the round, not the run.
    min_fit_clients: int = Field(1, ge=1)
    accept_failures: bool = True
    round_timeout: float = Field(1800.0, gt=0)
    # Seconds the server waits before its first round for exactly num_clients nodes; then the run
    # fails with a message naming both numbers (Flower alone would wait silently for a day).
    node_wait_timeout: float = Field(15.0, gt=0)
    # The largest magnitude a value of a node's tensors (adapters, statistics) or of the global
    # adapters may have: larger ones drop the reply, or roll the round's global state back.
    max_abs_value: float = Field(1e6, gt=0)
    # feda2v-sim exits 3 when a node never contributed a valid update, unless this is true.
    allow_missing_nodes: bool = False
    # Partial participation: this many partitions train each round, drawn from (seed, round) by
    # partition id (reproducible); the others sit the round out. None: all of them.
    clients_per_round: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _enough_participants(self) -> FederationSettings:
        if self.clients_per_round is not None and self.clients_per_round < min(self.min_fit_clients, self.num_clients):
            raise ValueError(
                f"clients_per_round ({self.clients_per_round}) is below min_fit_clients ({self.min_fit_clients}): "
                "no round could be aggregated"
            )
        return self


class TrainingSettings(_Section):
    batch_size: int = Field(8, ge=1)
    seed: int = Field(42, ge=0, lt=2**32)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class NodeSettings(_Section):
    # Class names or indices (ESC-50: ``target``; else the position in the dataset's class list).
    selected_classes: list[str | int] | None = None  # None: the round-robin share
    excluded_classes: list[str | int] = Field(default_factory=list)  # removed from the selection
    use_cls_token_only: bool | None = None
    # This node's train / val / test split (None: the data section's).
    train_ratio: float | None = Field(None, gt=0, lt=1)
    val_ratio: float | None = Field(None, ge=0, lt=1)
    split_seed: int | None = Field(None, ge=0, lt=2**32)
    max_clips_per_class: int | None = Field(None, ge=1)  # None: data.max_clips_per_class
    # Fault-tolerance drills: this node raises in every fit ("raise"), sends NaN ("nan"),
    # poisons: its adapters all 1e30 ("huge", finite in float32), or hangs in every fit for twice
    # federation.round_timeout before it raises ("hang": the server counts it failed at the timeout).
    simulate_fault: Literal["raise", "nan", "huge", "hang"] | None = None
    # Client generator overrides for this node.
    generator_granularity: Literal["unified", "per_class", "per_group"] | None = None
    generator_train_classes: list[str] | None = None
    generator_class_group: str | None = None


class DataSettings(_Section):
    # procedural: synthesised sounds; esc50 / vegas / vggsound: those releases' layouts;
    # audiofolder: one folder per class; precomputed: <root>/<class>/*.npy arrays (T, D).
    dataset: Literal["procedural", "esc50", "audiofolder", "vegas", "vggsound", "precomputed"] = "procedural"
    # Folder of a dataset on disk (relative: to the launch directory).
    root: str | None = None
    classes: list[str | int] | None = None  # names or indices, as in nodes.<id>.selected_classes
    clips_per_class: int = Field(40, ge=3)  # procedural only
    # Files only: a seeded (split_seed) choice of at most this many readable clips per class, made
    # before the train / val / test split (the original's VEGAS samples_per_node); None: all.
    max_clips_per_class: int | None = Field(None, ge=1)
    # Every clip is cut or zero-padded to this length; "auto": measured from the dataset's files
    # when the config is loaded (the auto_clip_percentile of the clips' durations; 100: longest).
    clip_seconds: Annotated[float, Field(gt=0.2)] | Literal["auto"] = 5.0
    auto_clip_percentile: float = Field(100.0, gt=0, le=100)
    sample_rate: int = Field(16000, ge=4000)
    # by_class: disjoint classes, round robin (or nodes.<id>.selected_classes); iid / dirichlet /
    # classes_per_node assign clips with flwr-datasets' partitioners; local (deployment: each
    # machine holds its own share): a node uses every clip of data.classes found in its folder.
    partitioning: Literal["by_class", "iid", "dirichlet", "classes_per_node", "local"] = "by_class"
    dirichlet_alpha: float = Field(0.5, gt=0)
    min_clips_per_node: int = Field(2, ge=1)  # dirichlet: redraw until every node has this many
    classes_per_node: int = Field(2, ge=1)
    partition_seed: int = Field(42, ge=0, lt=2**32)
    # "ratio": a seeded per-class split; "folds": ESC-50's folds; "official": VGGSound's train/test
    # (val_ratio of the official train clips become val); "groups" (audiofolder, precomputed): the
    # ratios split each class's groups, files named <group>__<anything> (one recording, or one
    # speaker), so no group is in two splits (what `feda2v-data prepare` writes).
    split_by: Literal["ratio", "folds", "official", "groups"] = "ratio"
    train_ratio: float = Field(0.7, gt=0, lt=1)
    val_ratio: float = Field(0.1, ge=0, lt=1)
    split_seed: int = Field(42, ge=0, lt=2**32)
    train_folds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    val_folds: list[int] = Field(default_factory=lambda: [4])
    test_folds: list[int] = Field(default_factory=lambda: [5])
    cache_dir: str = "outputs/cache"

    @model_validator(mode="after")
    def _consistent(self) -> DataSettings:
        if self.train_ratio + self.val_ratio >= 1.0:
            raise ValueError("train_ratio + val_ratio must leave room for a test split (< 1.0)")
        if self.dataset == "procedural":
            if self.root is not None:
                raise ValueError(
                    "root is set but dataset is 'procedural', which synthesises its clips: "
                    "set dataset to the one on disk (esc50, vegas, vggsound, audiofolder, precomputed), or remove root"
                )
            if self.max_clips_per_class is not None:
                raise ValueError(
                    "max_clips_per_class caps the clips read from disk; the 'procedural' dataset synthesises "
                    "clips_per_class clips per class: set clips_per_class instead"
                )
        if self.partitioning == "local":
            if self.dataset == "procedural":
                raise ValueError(
                    "partitioning 'local' uses the clips each node holds in its own folder; the 'procedural' "
                    "dataset has none: set dataset to the one on disk, or choose another partitioning"
                )
            if not self.classes or not all(isinstance(c, str) for c in self.classes):
                raise ValueError(
                    "partitioning 'local' needs data.classes to name every class of the federation (names, not "
                    "indices): each node's folder holds only some of them, and all nodes and the server must "
                    "share one label order"
                )
        if self.split_by == "folds":
            if self.dataset != "esc50":
                raise ValueError(
                    f"split_by 'folds' needs ESC-50's folds; dataset '{self.dataset}' has none: use 'ratio'"
                )
            folds = [*self.train_folds, *self.val_folds, *self.test_folds]
            if len(folds) != len(set(folds)):
                raise ValueError("train_folds, val_folds and test_folds must not share a fold")
        if self.split_by == "groups" and self.dataset not in ("audiofolder", "precomputed"):
            raise ValueError(
                f"split_by 'groups' reads the group from file names (<group>__<anything>), which the "
                f"'{self.dataset}' dataset does not name: use an audiofolder, or split_by 'ratio'"
            )
        if self.split_by == "official" and self.dataset != "vggsound":
            raise ValueError(
                f"split_by 'official' needs VGGSound's train/test metadata; dataset '{self.dataset}' has none: "
                "use 'ratio'"
            )
        return self


class ImageSettings(_Section):
    """Pictures of what the adapters produce (the ``diffusion`` extra: ``pip install ".[diffusion]"``).

    Stable Diffusion 1.5 for target profile ``sd`` (``prompt_embeds`` = the clip slot), FLUX for
    ``flux`` (``prompt_embeds`` = t5, ``pooled_prompt_embeds`` = clip). Scored by CLIP zero-shot
    classification among the federation's class names.
    """

    every_rounds: int = Field(0, ge=0)  # nodes draw their split's clips every N rounds; 0 = never
    split: Literal["val", "test"] = "test"
    per_class: int = Field(4, ge=1)  # clips drawn per class and node
    pipeline_model: str | None = None  # hub id or local dir; None: SD 1.5 / FLUX.1-schnell
    steps: int | None = Field(None, ge=1)  # None: 25 (SD) / 4 (FLUX.1-schnell)
    guidance_scale: float | None = Field(None, ge=0)  # None: 7.5 (SD) / 0.0 (FLUX.1-schnell)
    height: int | None = Field(None, ge=8)  # None: the pipeline's default
    width: int | None = Field(None, ge=8)
    low_memory: bool = False  # half precision (bf16 / fp16 on GPU) and one image at a time
    classifier_model: str = "openai/clip-vit-base-patch32"
    classifier_template: str = "a photo of {label}"
    seed: int = Field(0, ge=0, lt=2**32)
    output_dir: str = "images"  # relative: inside the run folder

    def due(self, server_round: int) -> bool:
        """Whether the nodes draw pictures in ``server_round``."""
        return self.every_rounds > 0 and server_round % self.every_rounds == 0


class WandbSettings(_Section):
    enabled: bool = True
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "feda2v-flwr"
    entity: str | None = None


class ExperimentConfig(_Section):
    feda2v: FedA2VSettings = Field(default_factory=FedA2VSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    nodes: dict[str, NodeSettings] = Field(default_factory=dict)
    data: DataSettings = Field(default_factory=DataSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)

    def node(self, partition_id: int) -> NodeSettings:
        return self.nodes.get(str(partition_id), NodeSettings())

    def evaluation_due(self, server_round: int, session_last_round: int | None = None) -> bool:
        """Whether ``server_round`` has a federated evaluation: every ``federation.eval_gap``
        rounds (0: never) and at the run's and this session's last round, and whenever the nodes
        draw pictures (they are scored in the evaluation)."""
        gap, last = self.federation.eval_gap, self.federation.global_rounds
        ends = (last, session_last_round or last)
        return (gap > 0 and (server_round % gap == 0 or server_round in ends)) or self.images.due(server_round)

    @model_validator(mode="after")
    def _nodes_are_partitions(self) -> ExperimentConfig:
        count = self.federation.num_clients
        unknown = [key for key in self.nodes if not (key.isdigit() and int(key) < count)]
        if unknown:
            raise ValueError(
                f"nodes {unknown} are not partition ids of this federation (0..{count - 1}, "
                f"federation.num_clients {count}): fix the key or the node count"
            )
        return self

    @model_validator(mode="after")
    def _one_statistics_length(self) -> ExperimentConfig:
        f = self.feda2v
        own = [pid for pid, n in self.nodes.items() if n.use_cls_token_only not in (None, f.use_cls_token_only)]
        if own and f.statistics_sequence_length is None:
            raise ValueError(
                f"nodes {own} set use_cls_token_only unlike feda2v.use_cls_token_only, so their class statistics "
                "would have another token length than the others': set feda2v.statistics_sequence_length "
                "(e.g. 1) so every node sends one length"
            )
        return self

    @model_validator(mode="after")
    def _class_choices_need_by_class(self) -> ExperimentConfig:
        if self.images.every_rounds and self.feda2v.target_profile == "minilm":
            raise ValueError(
                "images.every_rounds draws pictures from the adapters' prompt embeddings, which needs "
                "target_profile 'sd' or 'flux' (the 'minilm' profile feeds no diffusion model)"
            )
        if self.data.partitioning != "by_class":
            chosen = [pid for pid, n in self.nodes.items() if n.selected_classes is not None or n.excluded_classes]
            if chosen:
                raise ValueError(
                    f"nodes {chosen} choose their classes, which only data.partitioning 'by_class' honours "
                    f"(this run uses '{self.data.partitioning}')"
                )
        return self

    @model_validator(mode="after")
    def _data_matches_encoder(self) -> ExperimentConfig:
        precomputed = (self.data.dataset == "precomputed", self.feda2v.audio_encoder == "precomputed")
        if precomputed == (True, False):
            raise ValueError(
                "data.dataset 'precomputed' holds embeddings, not audio: set feda2v.audio_encoder to 'precomputed' "
                "(it passes the arrays through unchanged)"
            )
        if precomputed == (False, True):
            raise ValueError(
                "feda2v.audio_encoder 'precomputed' reads embeddings saved as .npy files: set data.dataset to "
                f"'precomputed' (<root>/<class>/*.npy arrays (T, D)), or choose 'mel-patch', 'ast' or 'aisfx' to "
                f"encode the '{self.data.dataset}' audio"
            )
        capped = [pid for pid, n in self.nodes.items() if n.max_clips_per_class is not None]
        if capped and self.data.dataset == "procedural":
            raise ValueError(
                f"nodes {capped} set max_clips_per_class, which caps clips read from disk; the 'procedural' "
                "dataset synthesises data.clips_per_class clips per class: remove it or use a dataset on disk"
            )
        return self


def unused_settings(config: ExperimentConfig) -> list[str]:
    """Keys the config sets that this run never reads (they do not apply to its dataset,
    partitioning or split), each as a sentence; callers warn once per key."""
    data, chosen = config.data, config.data.model_fields_set
    applies = {
        "clips_per_class": (data.dataset == "procedural", "the procedural dataset, which synthesises its clips"),
        "dirichlet_alpha": (data.partitioning == "dirichlet", "data.partitioning 'dirichlet'"),
        "min_clips_per_node": (data.partitioning == "dirichlet", "data.partitioning 'dirichlet'"),
        "classes_per_node": (data.partitioning == "classes_per_node", "data.partitioning 'classes_per_node'"),
        "train_folds": (data.split_by == "folds", "data.split_by 'folds'"),
        "val_folds": (data.split_by == "folds", "data.split_by 'folds'"),
        "test_folds": (data.split_by == "folds", "data.split_by 'folds'"),
        "train_ratio": (data.split_by in ("ratio", "groups"), "data.split_by 'ratio' or 'groups'"),
    }
    return [
        f"data.{key} is set but only applies to {where}; this run ({data.dataset}, partitioning {data.partitioning}, "
        f"split_by {data.split_by}) ignores it"
        for key, (used, where) in applies.items()
        if key in chosen and not used
    ]
