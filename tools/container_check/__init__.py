"""``make container-check``: the container image and the docker-compose walkthrough, proven with a
real Docker engine (docs/containers.md describes every step; this package runs them).

Standard library only, so it runs with the machine's ``python3`` (3.11+) before any virtualenv:
``python3 -m tools.container_check`` from the repository root. Modules: ``shell`` (commands,
steps, the summary), ``engine`` (installing and starting Docker and Compose v2), ``images``
(base images, the documented build, the hardened run), ``walkthrough`` (the compose steps).
"""
