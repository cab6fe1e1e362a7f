"""pathfm.datasets_scripts: whole-slide images -> tissue-filtered, multi-magnification tiles (online patching).

One tile, file by file: ``sources`` (folder / manifest / GDC download -> ``SlideRecord``) -> ``slide``
(``open_slide``: mpp, level choice, antialiased resize, background compositing) -> ``tissue``
(``compute_tissue_mask``) -> ``samplers`` (``RandomTileSampler`` / ``GridTileSampler`` -> ``TileCoord``) ->
``builder`` (``SlideTiles`` builder, ``tile_stream``, ``collate_tiles``) -> the training loop.
``embedded`` lists the three real slides shipped with the repo; ``publish`` writes fixed tile datasets
(parquet + dataset card) and pushes them to the Hub.
"""
