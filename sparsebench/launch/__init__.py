"""Launching a sweep: from a sweep file to runs executing somewhere, watched until they end.

``spec`` finds, parses and expands sweep files into one resolved run config per grid cell;
``slurm_spec`` is a sweep's ``slurm:`` block; ``plan`` says what a launch will do per run
(``--dry-run`` prints it); ``executors`` holds what every executor shares (``RunJob``, an
outcome, inline runs), ``local_pool`` the local worker processes and ``slurm`` the submitit
array job with its records and squeue/sacct watch; ``progress`` prints epoch lines while runs
train.

May import config, storage, training (a job calls its ``train``; the checks a run passes
before it starts are :mod:`sparsebench.training.preflight`), resolve, protocols and
distributed. ``executors`` imports no torch at module level: a SLURM job unpickles its
``RunJob`` first. The commands (``sweep``, ``paper``) import this package; nothing below does.
"""
