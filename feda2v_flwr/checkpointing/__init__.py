"""Every checkpoint the project writes, written and read here, and only here.

Three kinds, each a ``{stem}_round_{r}.pt`` file loaded weights-only (data, never code):

- the **run checkpoint** (``run.py``): the server's state after a round: global adapters, server
  generator(s) with optimizers and epochs, fine-tuning optimizer, RNG, config (nanoGPT's one dict);
- a **node's state** (``nodes.py``): the byte blobs a node keeps between rounds (adapter
  optimizers, local adapters, its generators), saved on the same rounds as the run checkpoint;
- a **client generator** (``nodes.py``): one of a node's generators with its classes, reusable as
  ``pretrained_generator_path``.

``files.py`` holds what they share: atomic writes, the one corrupt-file error, the one retention
rule (``checkpoint_keep_last``) and the one "is a checkpoint due this round" rule. ``resume.py``
continues a run from a run checkpoint. ``feda2v-checkpoint`` (``feda2v_flwr/checkpoint_cli.py``)
describes any kind.
"""
