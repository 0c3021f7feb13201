"""HyperLearn: embeddings for every modality of a multimodal dataset, learned as the CP factors of its sparse
relation tensors, refined by one graph encoder per modality and trained with one worker per modality.

`hyperlearn.coordinator.train_distributed` and `hyperlearn.joint.train_joint` are the entry points over a run
directory prepared by `pipeline`; `docs/design.md` describes the contracts.
"""
