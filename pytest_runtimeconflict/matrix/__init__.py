"""The wheel builders' regression suite behind ``python -m pytest_runtimeconflict matrix``:
the partner catalogue (:mod:`.catalogue`), one cached environment per pairing (:mod:`.envs`),
one planned run per pairing (:mod:`.rows`), the records, table, verdict and merge
(:mod:`.results`) and the HTML page (:mod:`.page`)."""
