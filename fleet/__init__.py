"""Worker fleets on the engines users already run: SLURM (submitit), Ray and Kubernetes.

An archsearch worker pulls its work, heartbeats its lease and hands it back on SIGTERM, so an
engine only has to start N copies of ``archsearch worker`` where the GPUs are and deliver a
SIGTERM before it takes a machine away. Each backend does exactly that with the engine's own
machinery: a submitit job array (``_slurm``), restartable Ray actors (``_ray``), or
Kubernetes manifests (``_k8s``). ``_child`` is the supervisor the first two share: it runs the
worker as a child process and turns the engine's stop signals into the worker's SIGTERM.
"""
