"""pathfm.datasets_scripts: whole-slide images -> tissue-filtered, multi-magnification tiles (online patching).

One tile, file by file: ``sources`` (folder / manifest / GDC download -> ``SlideRecord``) -> ``slide``
(``open_slide``: mpp, level choice, antialiased resize, background compositing) -> ``tissue``
(``compute_tissue_mask``) -> ``samplers`` (``RandomTileSampler`` / ``GridTileSampler`` -> ``TileCoord``) ->
``open_slides`` (per-worker LRU pool of open slides) -> ``builder`` (``tile_stream``: a public
``IterableDataset.from_generator`` coordinate stream + ``.map`` pixel reads; ``collate_tiles``) -> training.
``embedded`` lists the three real slides shipped with the repo; ``publish`` writes fixed tile datasets
(parquet + dataset card) and pushes them to the Hub; ``catalogue`` writes one parquet row per slide (with
``decode_check``: a test decode of stored tiles inside the tissue). ``skips`` is the one place where a slide
that cannot be used is classified, counted and named (training's start-up check, the stream, the catalogue);
``flag_ranges`` holds the bounds of the numeric flags the catalogue shares with training.
"""
