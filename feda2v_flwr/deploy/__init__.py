"""Multi-machine deployment: certificates, Flower commands, the ``feda2v-deploy`` CLI."""
