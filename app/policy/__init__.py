"""Policies: load and compile a directory of YAML policies, then evaluate requests against it.

``loader`` turns files into ``CompiledPolicies`` (or file:line problems), ``index`` finds the
rules that can match a request, ``evaluate`` decides, and ``normalize`` makes the request's path
and host safe to match. The conditions beyond subject live in ``timewindow``, ``grants``
(just-in-time grants), ``cel`` (``when:`` expressions) and ``evaluate.auth_holds`` (step-up);
``decide`` adds the dry-run and candidate shadows (``dryrun``) to the enforced verdict;
``request`` is what a request must be before any rule is asked (``policy_input``).
Tooling: ``lint`` (``policy check``), ``testing`` (``policy test``), ``explain``.
"""

from __future__ import annotations

from app.policy.evaluate import PolicyInput, Verdict, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir, load_policy_dir
from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.policy.problem import PolicyLoadError, Problem

__all__ = [
    "CompiledPolicies",
    "PathRejected",
    "PolicyInput",
    "PolicyLoadError",
    "Problem",
    "Verdict",
    "check_policy_dir",
    "evaluate",
    "load_policy_dir",
    "normalize_host",
    "normalize_path",
]
