"""Data: token shards (datatrove's .ds layout), the training loader, and the pretraining data pipeline."""
