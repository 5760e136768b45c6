"""Stage 3, the new layer: train it on cached bottlenecks (train, sampling, feeding, checkpoint), then optionally fine-tune the network with it (finetune, finetune_data, finetune_checkpoint)."""
