"""Storage: where every file of a run and a sweep lives, and how it is written and read safely.

``paths`` names every file and folder (and finds the built-in and the user's methods, sweeps,
configs and protocols); ``atomic`` writes a file so that a reader or a crash never sees half of
it; ``locks`` lets one writer at a time hold a run or a sweep's launcher; ``checkpoints`` saves
and loads epoch checkpoints, moving damaged ones aside; ``run_files`` reads a run folder's
result.json and metrics.jsonl back, checked field by field.

The bottom layer: it imports the standard library, torch (checkpoints) and nothing else of
sparsebench, so every other package may import it.
"""
