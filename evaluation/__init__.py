"""pathfm.evaluation: frozen-backbone probing under the versioned protocol ``pathfm-linear-v1``.

Read in this order: ``linear_probe.py`` (CLI) -> ``tasks/`` (datasets builders: list, validate, load) ->
``backbone.py`` (model + its own image processor + revision) -> ``embed.py`` / ``embedding_cache.py``
(embed once, cache as safetensors + manifest) -> ``linear_head.py`` / ``knn_probe.py`` (probes, see
``protocol.py``) -> ``scoring.py`` (the `evaluate` scripts in ``metrics/``) -> ``report.py``,
``card_results.py``, ``head_export.py`` (outputs).
"""
