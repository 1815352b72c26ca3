"""FedA2V: federated audio-to-visual prompt learning on Flower."""
